//! The two paged lists: assignments and consumption, each with SCIM
//! `filter`, `sort`, cursor pages and `links`.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::error::{QlikError, R};
use super::page::{self, Cursor, SortKey};
use super::scim::{self, Kind, Val};
use super::wire::consumption_json;
use super::{LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, PREFIX};
use crate::engine::qlik::{Assignment, ConsumptionRecord, QlikTenant};
use crate::engine::time::format_instant;
use crate::http::{json_value, Query, Resp};

/// `limit`: 1 to [`LIST_LIMIT_MAX`], default [`LIST_LIMIT_DEFAULT`].
pub(super) fn limit_of(query: &Query<'_>) -> R<usize> {
    match query.get("limit") {
        None => Ok(LIST_LIMIT_DEFAULT),
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => Ok(n),
            _ => Err(QlikError::bad_query(format!(
                "limit must be an integer from 1 to {LIST_LIMIT_MAX}."
            ))),
        },
    }
}

pub(super) const ASSIGNMENT_SCHEMA: &[(&str, Kind)] = &[
    ("subject", Kind::Str),
    ("type", Kind::Str),
    ("excess", Kind::Bool),
    ("created", Kind::Time),
];

pub(super) fn assignment_vals(a: &Assignment) -> [Val<'_>; 4] {
    [
        Val::Str(&a.subject),
        Val::Str(a.kind.as_str()),
        Val::Bool(a.excess),
        Val::Time(a.created),
    ]
}

pub(super) fn assignment_key(a: &Assignment, field: usize) -> SortKey {
    match field {
        0 => SortKey::Str(a.subject.clone()),
        1 => SortKey::Str(a.kind.as_str().into()),
        2 => SortKey::Bool(a.excess),
        _ => SortKey::Int(a.created),
    }
}

pub(super) fn list_assignments(q: &QlikTenant, query: &Query<'_>, host: &str) -> R<Resp> {
    let limit = limit_of(query)?;
    let filter = match query.get("filter").filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(
            scim::parse(f, ASSIGNMENT_SCHEMA)
                .map_err(|e| QlikError::bad_query(format!("Invalid filter: {}.", e.0)))?,
        ),
        None => None,
    };
    let orphans = match query.get("orphans") {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(QlikError::bad_query("orphans must be true or false.")),
    };
    let sort = page::Sort::parse(
        query.get("sort"),
        &["subject", "type", "excess", "created"],
        0,
    )
    .map_err(QlikError::bad_query)?;
    let cursor = Cursor::parse(query.get("page"), &sort).map_err(QlikError::bad_query)?;
    let users = q.users.read().clone();
    let mut items: Vec<(SortKey, String, Assignment)> = {
        let book = q.book.lock();
        book.assignments
            .values()
            .filter(|a| !orphans || !users.contains(&a.subject))
            .filter(|a| {
                filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&assignment_vals(a)))
            })
            .map(|a| (assignment_key(a, sort.field), a.subject.clone(), a.clone()))
            .collect()
    };
    let page = page::paginate(&mut items, &sort, cursor.as_ref(), limit);
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|(_, _, a)| {
            json!({
                "type": a.kind.as_str(),
                "excess": a.excess,
                "created": format_instant(a.created),
                "subject": a.subject,
            })
        })
        .collect();
    let links = page.links(host, &format!("{PREFIX}/assignments"), query, &sort, limit);
    Ok(json_value(
        StatusCode::OK,
        &json!({"data": data, "links": links}),
    ))
}

pub(super) const CONSUMPTION_SCHEMA: &[(&str, Kind)] = &[("endTime", Kind::Time)];

pub(super) fn consumption_key(r: &ConsumptionRecord, field: usize) -> SortKey {
    match field {
        0 => SortKey::Int(r.end_time),
        1 => SortKey::Int(r.minutes_used),
        2 => SortKey::Int(r.capacity_used),
        _ => SortKey::Int(r.id as i64),
    }
}

pub(super) fn list_consumption(q: &QlikTenant, query: &Query<'_>, host: &str) -> R<Resp> {
    let limit = limit_of(query)?;
    let filter = match query.get("filter").filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(
            scim::parse(f, CONSUMPTION_SCHEMA)
                .map_err(|e| QlikError::bad_query(format!("Invalid filter: {}.", e.0)))?,
        ),
        None => None,
    };
    let sort = page::Sort::parse(
        query.get("sort"),
        &["endTime", "minutesUsed", "capacityUsed", "id"],
        0,
    )
    .map_err(QlikError::bad_query)?;
    let cursor = Cursor::parse(query.get("page"), &sort).map_err(QlikError::bad_query)?;
    let mut items: Vec<(SortKey, String, ConsumptionRecord)> = {
        let book = q.book.lock();
        book.consumption
            .iter()
            .filter(|r| {
                filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&[Val::Time(r.end_time)]))
            })
            .map(|r| {
                (
                    consumption_key(r, sort.field),
                    format!("{:020}", r.id),
                    r.clone(),
                )
            })
            .collect()
    };
    let page = page::paginate(&mut items, &sort, cursor.as_ref(), limit);
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|(_, _, r)| consumption_json(q, r))
        .collect();
    let links = page.links(host, &format!("{PREFIX}/consumption"), query, &sort, limit);
    Ok(json_value(
        StatusCode::OK,
        &json!({"data": data, "links": links}),
    ))
}
