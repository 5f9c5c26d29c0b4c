//! `GET .../licensepacks`: the account's packs, a page at a time.

use serde_json::{json, Value};

use super::error::R;
use super::page_size;
use super::wire::{ok, pack_json, token, untoken};
use crate::engine::time::Millis;
use crate::engine::yext::{PackView, YextAccount};
use crate::http::{Query, Resp};

/// One page of packs in id order, after the token's last id.
pub(super) fn list(acc: &YextAccount, query: &Query<'_>, now: Millis) -> R<Resp> {
    let size = page_size(query)?;
    let after: Option<String> = untoken(query)?;
    let all = acc.packs(now);
    let rest: Vec<&PackView> = all
        .iter()
        .filter(|p| after.as_ref().is_none_or(|a| p.id.as_str() > a.as_str()))
        .collect();
    let page: Vec<Value> = rest.iter().take(size).map(|p| pack_json(p)).collect();
    let mut response = json!({"licensePacks": page});
    if rest.len() > size {
        response["nextPageToken"] = token(&rest[size - 1].id).into();
    }
    Ok(ok(response))
}
