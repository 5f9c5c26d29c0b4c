//! Sorting and cursor pages for Qlik lists. A page token names the sort and
//! the sort key of the item it continues from (with a unique tie-breaker), so
//! it stays correct while items are added or removed between requests: the
//! next page starts right after that item wherever it now is.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::Query;

/// Longest page token accepted, bytes.
const PAGE_TOKEN_BYTES_MAX: usize = 2048;

/// The value an item sorts by (one kind per list).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortKey {
    Bool(bool),
    Int(i64),
    Str(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sort {
    /// Index into the list's sortable fields.
    pub field: usize,
    pub name: &'static str,
    pub desc: bool,
}

impl Sort {
    /// `field`, `+field` or `-field` (a `+` that arrived unescaped in a query
    /// string reads as a space).
    pub fn parse(s: Option<&str>, fields: &[&'static str], default: usize) -> Result<Sort, String> {
        let Some(s) = s.filter(|s| !s.trim().is_empty()) else {
            return Ok(Sort {
                field: default,
                name: fields[default],
                desc: false,
            });
        };
        let (desc, name) = match s.trim_start().strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.trim_start().trim_start_matches('+')),
        };
        let name = name.trim();
        match fields.iter().position(|f| f.eq_ignore_ascii_case(name)) {
            Some(field) => Ok(Sort {
                field,
                name: fields[field],
                desc,
            }),
            None => Err(format!(
                "Invalid sort: unknown field '{name}' (sortable: {}, each optionally prefixed with + or -).",
                fields.join(", ")
            )),
        }
    }

    /// The canonical spelling (`+subject`, `-created`).
    pub fn spec(&self) -> String {
        format!("{}{}", if self.desc { '-' } else { '+' }, self.name)
    }

    fn cmp(&self, a: (&SortKey, &str), b: (&SortKey, &str)) -> std::cmp::Ordering {
        let o = a.0.cmp(b.0).then_with(|| a.1.cmp(b.1));
        if self.desc {
            o.reverse()
        } else {
            o
        }
    }
}

/// Where a page starts: after (next) or before (prev) an item's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    #[serde(rename = "d")]
    next: bool,
    #[serde(rename = "s")]
    sort: String,
    #[serde(rename = "k")]
    key: SortKey,
    #[serde(rename = "t")]
    tie: String,
}

impl Cursor {
    pub fn parse(page: Option<&str>, sort: &Sort) -> Result<Option<Cursor>, String> {
        let Some(p) = page.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let bad = || "Invalid page: not a page token of this list.".to_string();
        if p.len() > PAGE_TOKEN_BYTES_MAX {
            return Err(bad());
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p.trim_end_matches('='))
            .map_err(|_| bad())?;
        let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if c.sort != sort.spec() {
            return Err(format!(
                "Invalid page: the token was made for sort {}, not {}.",
                c.sort,
                sort.spec()
            ));
        }
        Ok(Some(c))
    }

    fn token(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

pub struct Page<T> {
    pub items: Vec<(SortKey, String, T)>,
    next: Option<Cursor>,
    prev: Option<Cursor>,
}

/// Sorts `items` (key, unique tie-breaker, item) and cuts the page `cursor`
/// asks for, `limit` long.
pub fn paginate<T>(
    items: &mut Vec<(SortKey, String, T)>,
    sort: &Sort,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Page<T> {
    items.sort_by(|a, b| sort.cmp((&a.0, &a.1), (&b.0, &b.1)));
    let n = items.len();
    let (start, end) = match cursor {
        None => (0, limit.min(n)),
        Some(c) if c.next => {
            let start = items.partition_point(|x| {
                sort.cmp((&x.0, &x.1), (&c.key, &c.tie)) != std::cmp::Ordering::Greater
            });
            (start, (start + limit).min(n))
        }
        Some(c) => {
            let end = items.partition_point(|x| {
                sort.cmp((&x.0, &x.1), (&c.key, &c.tie)) == std::cmp::Ordering::Less
            });
            (end.saturating_sub(limit), end)
        }
    };
    let at = |i: usize, next: bool| Cursor {
        next,
        sort: sort.spec(),
        key: items[i].0.clone(),
        tie: items[i].1.clone(),
    };
    let next = (end < n && end > start).then(|| at(end - 1, true));
    let prev = (start > 0 && start < n).then(|| at(start, false));
    let page: Vec<_> = items.drain(start..end).collect();
    Page {
        items: page,
        next,
        prev,
    }
}

impl<T> Page<T> {
    /// `{"next": {"href"}, "prev": {"href"}}`, each present when that page
    /// exists; hrefs keep the request's filter, sort and orphans.
    pub fn links(
        &self,
        host: &str,
        path: &str,
        query: &Query<'_>,
        sort: &Sort,
        limit: usize,
    ) -> Value {
        let href = |c: &Cursor| {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query.iter() {
                if matches!(k, "filter" | "orphans") {
                    s.append_pair(k, v);
                }
            }
            s.append_pair("sort", &sort.spec());
            s.append_pair("limit", &limit.to_string());
            s.append_pair("page", &c.token());
            json!({ "href": format!("http://{host}{path}?{}", s.finish()) })
        };
        let mut links = json!({});
        if let Some(c) = &self.next {
            links["next"] = href(c);
        }
        if let Some(c) = &self.prev {
            links["prev"] = href(c);
        }
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: i64) -> Vec<(SortKey, String, i64)> {
        (0..n)
            .map(|i| (SortKey::Int(i / 2), format!("{i:03}"), i))
            .collect()
    }

    #[test]
    fn pages_forward_and_back_and_survive_inserts() {
        let sort = Sort::parse(Some("-created"), &["subject", "created"], 0).unwrap();
        let mut items = list(10);
        let p1 = paginate(&mut items, &sort, None, 4);
        assert_eq!(
            p1.items.iter().map(|x| x.2).collect::<Vec<_>>(),
            vec![9, 8, 7, 6]
        );
        assert!(p1.prev.is_none());
        let next = p1.next.clone().unwrap();
        // An item sorting before the cursor is added: the next page is unaffected.
        let mut items = list(10);
        items.push((SortKey::Int(100), "zzz".into(), 100));
        let p2 = paginate(&mut items, &sort, Some(&next), 4);
        assert_eq!(
            p2.items.iter().map(|x| x.2).collect::<Vec<_>>(),
            vec![5, 4, 3, 2]
        );
        let back = p2.prev.clone().unwrap();
        let mut items = list(10);
        let p0 = paginate(&mut items, &sort, Some(&back), 4);
        assert_eq!(
            p0.items.iter().map(|x| x.2).collect::<Vec<_>>(),
            vec![9, 8, 7, 6]
        );
        let tok = next.token();
        assert_eq!(Cursor::parse(Some(&tok), &sort).unwrap(), Some(next));
        let other = Sort::parse(Some("subject"), &["subject", "created"], 0).unwrap();
        assert!(Cursor::parse(Some(&tok), &other).is_err());
        assert!(Cursor::parse(Some("garbage!"), &sort).is_err());
    }

    #[test]
    fn sort_spellings() {
        let f = &["subject", "created"];
        assert!(!Sort::parse(Some("+subject"), f, 1).unwrap().desc);
        assert!(!Sort::parse(Some(" subject"), f, 1).unwrap().desc);
        assert!(Sort::parse(Some("-created"), f, 0).unwrap().desc);
        assert_eq!(Sort::parse(None, f, 1).unwrap().name, "created");
        assert!(Sort::parse(Some("nope"), f, 0).is_err());
    }
}
