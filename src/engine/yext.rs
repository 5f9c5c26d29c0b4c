//! Yext-style license packs: an account's packs, each a [`SeatPool`] of
//! `total` licenses, assigned to entities (by external id), with removals
//! that can be scheduled for the beginning of a day (UTC).
//!
//! Every change to an account's assignments runs under its `book` mutex, so
//! "not yet assigned, then take a seat" is atomic and assigning twice never
//! takes a second seat. A scheduled removal takes effect at its instant: reads
//! stop showing it then (they are pure), any change to the account that
//! succeeds first removes what is due (with the change's own `now`, so a
//! replay does the same), and the expiry sweep
//! ([`super::Command::SweepExpired`]) removes the rest. A refused change
//! changes nothing at all: refusals are not logged, so anything one changed
//! would be missing from a replay.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::model::Id;
use super::seat::SeatPool;
use super::time::Millis;
use super::EngineError;
use crate::engine::{QlikRefusal, YextRefusal};

/// Packs of one account.
pub const YEXT_PACKS_MAX: usize = 1_000;
/// Assignments of one account. An account is one snapshot frame: this with
/// [`YEXT_ID_BYTES_MAX`] keeps it well under the frame limit even with every
/// character escaped.
pub const YEXT_ASSIGNMENTS_MAX: usize = 200_000;
/// Length of an account, pack or entity id, or a pack name, bytes.
pub const YEXT_ID_BYTES_MAX: usize = 128;
/// The largest pack.
pub const YEXT_PACK_TOTAL_MAX: u64 = 100_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct YextPackSpec {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Licenses in the pack.
    pub total: u64,
    /// Inactive packs are not listed and take no new assignments.
    #[serde(default = "yes")]
    pub active: bool,
    /// Free text Yext shows with the pack, at most [`YEXT_NOTES_BYTES_MAX`].
    #[serde(default)]
    pub notes: String,
}

/// Longest pack `notes`, bytes.
pub const YEXT_NOTES_BYTES_MAX: usize = 4096;

fn yes() -> bool {
    true
}

/// An account's packs as an admin provisions them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct YextSpec {
    /// The account id of the API's paths (`/v2/accounts/{accountId}/...`).
    pub account_id: String,
    #[serde(default)]
    pub packs: Vec<YextPackSpec>,
}

pub fn check_id(field: &'static str, s: &str) -> Result<(), EngineError> {
    if s.is_empty() {
        return Err(EngineError::Invalid(field, "must not be empty"));
    }
    if s.len() > YEXT_ID_BYTES_MAX {
        return Err(EngineError::Invalid(field, "too long"));
    }
    if s.chars().any(char::is_control) || s.contains('/') {
        return Err(EngineError::Invalid(
            field,
            "must not hold '/' or control characters",
        ));
    }
    Ok(())
}

pub fn validate(spec: &YextSpec) -> Result<(), EngineError> {
    check_id("accountId", &spec.account_id)?;
    if spec.account_id == "me" {
        return Err(EngineError::Invalid("accountId", "'me' is reserved"));
    }
    if spec.packs.len() > YEXT_PACKS_MAX {
        return Err(EngineError::TooMany("packs"));
    }
    let mut seen = std::collections::HashSet::new();
    for p in &spec.packs {
        check_id("packs.id", &p.id)?;
        if p.id == "-" {
            return Err(EngineError::Invalid("packs.id", "'-' is the wildcard"));
        }
        if p.name.len() > YEXT_ID_BYTES_MAX {
            return Err(EngineError::Invalid("packs.name", "too long"));
        }
        if p.notes.len() > YEXT_NOTES_BYTES_MAX {
            return Err(EngineError::Invalid("packs.notes", "too long"));
        }
        if p.total > YEXT_PACK_TOTAL_MAX {
            return Err(EngineError::Invalid("packs.total", "too large"));
        }
        if !seen.insert(p.id.as_str()) {
            return Err(EngineError::Duplicate("pack id"));
        }
    }
    Ok(())
}

/// An assignment as a catalog lists it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct YextAssignmentInput {
    pub pack: String,
    pub entity: String,
    #[serde(default)]
    pub expiration_date: Option<String>,
}

/// One assignment: a license of `pack` on `entity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YextAssignment {
    pub pack: String,
    pub entity: String,
    /// The scheduled removal: its day (`YYYY-MM-DD`) and the instant it
    /// starts (UTC).
    pub expiration: Option<(String, Millis)>,
}

/// Assignments and seat counts, behind the account's one lock.
#[derive(Debug, Default)]
pub struct YextBook {
    /// (pack, entity) -> scheduled removal.
    assignments: BTreeMap<(String, String), Option<(String, Millis)>>,
    /// (entity, pack): the packs of one entity.
    by_entity: BTreeSet<(String, String)>,
    /// (removal instant, pack, entity): what falls due next.
    due: BTreeSet<(Millis, String, String)>,
    /// pack id -> its seats (packs dropped from the spec keep theirs while
    /// they still hold assignments).
    pools: HashMap<String, SeatPool>,
}

#[derive(Debug)]
pub struct YextAccount {
    pub tenant_id: Id,
    /// Replaced whole by an admin put.
    pub spec: RwLock<Arc<YextSpec>>,
    pub book: Mutex<YextBook>,
}

/// A pack as read at an instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackView {
    pub id: String,
    pub name: String,
    pub total: u64,
    pub assigned: u64,
    pub notes: String,
}

impl YextBook {
    fn view(&self, p: &YextPackSpec, now: Millis) -> PackView {
        let used = self.pools.get(&p.id).map_or(0, SeatPool::used);
        PackView {
            id: p.id.clone(),
            name: p.name.clone(),
            total: p.total,
            assigned: used.saturating_sub(self.due_in(&p.id, now)),
            notes: p.notes.clone(),
        }
    }

    /// Removes every assignment due by `now`; returns how many.
    fn purge(&mut self, now: Millis) -> usize {
        let mut n = 0;
        while let Some((at, pack, entity)) = self.due.first().cloned() {
            if at > now {
                break;
            }
            self.due.pop_first();
            self.remove(&pack, &entity);
            n += 1;
        }
        n
    }

    fn remove(&mut self, pack: &str, entity: &str) -> bool {
        let key = (pack.to_string(), entity.to_string());
        let Some(exp) = self.assignments.remove(&key) else {
            return false;
        };
        if let Some((_, at)) = exp {
            self.due.remove(&(at, key.0.clone(), key.1.clone()));
        }
        self.by_entity.remove(&(key.1, key.0));
        if let Some(p) = self.pools.get(pack) {
            p.release();
        }
        true
    }

    /// Assignments due by `now` but not yet removed.
    fn due_by(&self, now: Millis) -> usize {
        self.due
            .range(..=(now, String::from('\u{10ffff}'), String::new()))
            .count()
    }

    /// Assignments of `pack` due by `now` but not yet removed.
    fn due_in(&self, pack: &str, now: Millis) -> u64 {
        self.due
            .range(..=(now, String::from('\u{10ffff}'), String::new()))
            .filter(|(_, p, _)| p == pack)
            .count() as u64
    }

    fn live(&self, exp: &Option<(String, Millis)>, now: Millis) -> bool {
        exp.as_ref().is_none_or(|(_, at)| *at > now)
    }
}

impl YextAccount {
    /// The first scheduled removal after `after` (a test clock's next stop).
    pub fn next_due(&self, after: Millis) -> Option<Millis> {
        self.book
            .lock()
            .due
            .iter()
            .map(|(at, _, _)| *at)
            .find(|at| *at > after)
    }

    /// Whether `entity` holds an assignment of any pack (the console's search).
    pub fn has_entity(&self, entity: &str) -> bool {
        self.book
            .lock()
            .by_entity
            .range((entity.to_string(), String::new())..)
            .next()
            .is_some_and(|(e, _)| e == entity)
    }

    pub fn new(tenant_id: Id, spec: Arc<YextSpec>) -> YextAccount {
        let a = YextAccount {
            tenant_id,
            spec: RwLock::new(spec.clone()),
            book: Mutex::new(YextBook::default()),
        };
        a.set_spec(spec);
        a
    }

    /// Replaces the packs; assignments stay (a pack lowered below its use
    /// keeps its assignments, as any seat pool).
    pub fn set_spec(&self, spec: Arc<YextSpec>) {
        let mut book = self.book.lock();
        for p in &spec.packs {
            match book.pools.get(&p.id) {
                Some(pool) => pool.set_limits(p.total, 0, false),
                None => {
                    book.pools
                        .insert(p.id.clone(), SeatPool::new(p.total, 0, false));
                }
            }
        }
        // Packs gone from the spec with nothing assigned are forgotten.
        let keep: std::collections::HashSet<&str> =
            spec.packs.iter().map(|p| p.id.as_str()).collect();
        book.pools
            .retain(|id, pool| keep.contains(id.as_str()) || pool.used() > 0);
        *self.spec.write() = spec;
    }

    fn pack_spec(&self, pack: &str) -> Option<YextPackSpec> {
        self.spec
            .read()
            .packs
            .iter()
            .find(|p| p.id == pack)
            .cloned()
    }

    /// Assigns a license of `pack` to `entity`. Ok(false): it already held one
    /// (no second seat is taken).
    pub fn assign(&self, pack: &str, entity: &str, now: Millis) -> Result<bool, EngineError> {
        check_id("entityId", entity)?;
        let spec = self.pack_spec(pack).filter(|p| p.active);
        let mut book = self.book.lock();
        let Some(_) = spec else {
            return Err(EngineError::Yext(YextRefusal::PackNotFound));
        };
        let key = (pack.to_string(), entity.to_string());
        match book.assignments.get(&key) {
            Some(exp) if book.live(exp, now) => return Ok(false),
            _ => {}
        }
        if book.assignments.len() >= YEXT_ASSIGNMENTS_MAX && book.due_by(now) == 0 {
            return Err(EngineError::TooMany("assignments"));
        }
        let pool = book
            .pools
            .get(pack)
            .ok_or(EngineError::Yext(YextRefusal::PackNotFound))?;
        let free = pool.used() < pool.capacity() || book.due_in(pack, now) > 0;
        if !free {
            return Err(EngineError::Yext(YextRefusal::NoLicensesLeft));
        }
        // From here on the command succeeds: only now may it change state
        // (refusals are not logged; see the module doc).
        book.purge(now);
        let pool = book
            .pools
            .get(pack)
            .ok_or(EngineError::Yext(YextRefusal::PackNotFound))?;
        pool.try_acquire()
            .map_err(|_| EngineError::Yext(YextRefusal::NoLicensesLeft))?;
        book.by_entity.insert((key.1.clone(), key.0.clone()));
        book.assignments.insert(key, None);
        Ok(true)
    }

    /// Removes `entity`'s license of `pack` at once.
    pub fn unassign(&self, pack: &str, entity: &str, now: Millis) -> Result<(), EngineError> {
        let mut book = self.book.lock();
        match book
            .assignments
            .get(&(pack.to_string(), entity.to_string()))
        {
            Some(exp) if book.live(exp, now) => {}
            _ => return Err(EngineError::Qlik(QlikRefusal::AssignmentNotFound)),
        }
        book.purge(now);
        book.remove(pack, entity);
        Ok(())
    }

    /// Schedules (or with None cancels) the removal of `entity`'s license of
    /// `pack` at `expiration` (its day and that day's first instant, after `now`).
    pub fn schedule(
        &self,
        pack: &str,
        entity: &str,
        expiration: Option<(String, Millis)>,
        now: Millis,
    ) -> Result<(), EngineError> {
        if expiration.as_ref().is_some_and(|(_, at)| *at <= now) {
            return Err(EngineError::Invalid(
                "expirationDate",
                "must be a day after today",
            ));
        }
        let mut book = self.book.lock();
        let key = (pack.to_string(), entity.to_string());
        let old = match book.assignments.get(&key) {
            Some(exp) if book.live(exp, now) => exp.clone(),
            _ => return Err(EngineError::Qlik(QlikRefusal::AssignmentNotFound)),
        };
        book.purge(now);
        if let Some((_, at)) = old {
            book.due.remove(&(at, key.0.clone(), key.1.clone()));
        }
        if let Some((_, at)) = &expiration {
            book.due.insert((*at, key.0.clone(), key.1.clone()));
        }
        book.assignments.insert(key, expiration);
        Ok(())
    }

    /// (pack, entity) of the assignments due by `now` and not yet removed:
    /// what the next change (or the sweep) removes first.
    pub fn due(&self, now: Millis) -> Vec<(String, String)> {
        self.book
            .lock()
            .due
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .map(|(_, pack, entity)| (pack.clone(), entity.clone()))
            .collect()
    }

    /// Removes every assignment due by `now` (the expiry sweep).
    pub fn sweep(&self, now: Millis) -> usize {
        self.book.lock().purge(now)
    }

    /// The account's active packs at `now`, by id.
    pub fn packs(&self, now: Millis) -> Vec<PackView> {
        let spec = self.spec.read().clone();
        let book = self.book.lock();
        let mut v: Vec<PackView> = spec
            .packs
            .iter()
            .filter(|p| p.active)
            .map(|p| book.view(p, now))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// One pack at `now`, active or not (assignments of an inactive pack
    /// still name it); a pack an admin removed while it had assignments is
    /// seen with no licenses (total 0) until they are removed.
    pub fn pack(&self, id: &str, now: Millis) -> Option<PackView> {
        let spec = self.spec.read().clone();
        let book = self.book.lock();
        match spec.packs.iter().find(|p| p.id == id) {
            Some(p) => Some(book.view(p, now)),
            None => book.pools.contains_key(id).then(|| {
                let removed = YextPackSpec {
                    id: id.to_string(),
                    name: String::new(),
                    total: 0,
                    active: false,
                    notes: String::new(),
                };
                book.view(&removed, now)
            }),
        }
    }

    /// How many live assignments [`YextAccount::assignments`] would list in
    /// all, from the pools' counts (no walk over the assignments).
    pub fn count(&self, pack: Option<&str>, entity: Option<&str>, now: Millis) -> usize {
        let book = self.book.lock();
        match (pack, entity) {
            (_, Some(e)) => book
                .by_entity
                .range((e.to_string(), String::new())..)
                .take_while(|(ent, _)| ent == e)
                .filter(|(_, p)| pack.is_none_or(|want| want == p))
                .filter(|(ent, p)| book.live(&book.assignments[&(p.clone(), ent.clone())], now))
                .count(),
            (Some(p), None) => {
                let used = book.pools.get(p).map_or(0, SeatPool::used);
                used.saturating_sub(book.due_in(p, now)) as usize
            }
            (None, None) => {
                let used: u64 = book.pools.values().map(SeatPool::used).sum();
                (used as usize).saturating_sub(book.due_by(now))
            }
        }
    }

    pub fn has_pack(&self, pack: &str) -> bool {
        self.spec.read().packs.iter().any(|p| p.id == pack)
    }

    /// Live assignments at `now` in (pack, entity) order, of one pack or all
    /// (`None`), of one entity or all, strictly after `after`, at most `limit`
    /// plus whether more follow.
    pub fn assignments(
        &self,
        pack: Option<&str>,
        entity: Option<&str>,
        after: Option<&(String, String)>,
        limit: usize,
        now: Millis,
    ) -> (Vec<YextAssignment>, bool) {
        let book = self.book.lock();
        let mut out = Vec::new();
        let mut more = false;
        let mut push = |p: &str, e: &str, exp: &Option<(String, Millis)>| -> bool {
            if !book.live(exp, now) {
                return true;
            }
            if out.len() == limit {
                more = true;
                return false;
            }
            out.push(YextAssignment {
                pack: p.to_string(),
                entity: e.to_string(),
                expiration: exp.clone(),
            });
            true
        };
        match entity {
            Some(e) => {
                // Through the entity index, in pack order.
                let start = (e.to_string(), after.map_or(String::new(), |a| a.0.clone()));
                for (ent, p) in book.by_entity.range(start..) {
                    if ent != e {
                        break;
                    }
                    if pack.is_some_and(|want| want != p)
                        || after.is_some_and(|a| (p, ent) <= (&a.0, &a.1))
                    {
                        continue;
                    }
                    let exp = &book.assignments[&(p.clone(), ent.clone())];
                    if !push(p, ent, exp) {
                        break;
                    }
                }
            }
            None => {
                let start = match (after, pack) {
                    (Some(a), _) => std::ops::Bound::Excluded(a.clone()),
                    (None, Some(p)) => std::ops::Bound::Included((p.to_string(), String::new())),
                    (None, None) => std::ops::Bound::Unbounded,
                };
                for ((p, e), exp) in book.assignments.range((start, std::ops::Bound::Unbounded)) {
                    if pack.is_some_and(|want| want != p) {
                        break;
                    }
                    if !push(p, e, exp) {
                        break;
                    }
                }
            }
        }
        (out, more)
    }

    // ------------------------------------------------------------ images

    pub fn image(&self) -> YextImage {
        let book = self.book.lock();
        YextImage {
            tenant_id: self.tenant_id,
            spec: (**self.spec.read()).clone(),
            assignments: book
                .assignments
                .iter()
                .map(|((p, e), exp)| YextAssignment {
                    pack: p.clone(),
                    entity: e.clone(),
                    expiration: exp.clone(),
                })
                .collect(),
        }
    }

    pub fn from_image(img: YextImage) -> Result<YextAccount, EngineError> {
        validate(&img.spec)?;
        let a = YextAccount::new(img.tenant_id, Arc::new(img.spec));
        let mut book = a.book.lock();
        for x in img.assignments {
            book.pools
                .entry(x.pack.clone())
                .or_insert_with(|| SeatPool::new(0, 0, false))
                .force_acquire();
            if let Some((_, at)) = &x.expiration {
                book.due.insert((*at, x.pack.clone(), x.entity.clone()));
            }
            book.by_entity.insert((x.entity.clone(), x.pack.clone()));
            book.assignments.insert((x.pack, x.entity), x.expiration);
        }
        drop(book);
        Ok(a)
    }
}

/// An account's state as plain values (snapshots).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YextImage {
    pub tenant_id: Id,
    pub spec: YextSpec,
    pub assignments: Vec<YextAssignment>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::time::{parse_instant, DAY_MS};

    fn account(total: u64) -> YextAccount {
        YextAccount::new(
            1,
            Arc::new(YextSpec {
                account_id: "acc".into(),
                packs: vec![YextPackSpec {
                    id: "p1".into(),
                    name: "Pack".into(),
                    total,
                    active: true,
                    notes: String::new(),
                }],
            }),
        )
    }

    #[test]
    fn assign_once_until_full() {
        let a = account(2);
        assert_eq!(a.assign("p1", "e1", 0), Ok(true));
        assert_eq!(a.assign("p1", "e1", 0), Ok(false));
        assert_eq!(a.assign("p1", "e2", 0), Ok(true));
        assert_eq!(
            a.assign("p1", "e3", 0),
            Err(EngineError::Yext(YextRefusal::NoLicensesLeft))
        );
        assert_eq!(
            a.assign("nope", "e3", 0),
            Err(EngineError::Yext(YextRefusal::PackNotFound))
        );
        assert_eq!(a.packs(0)[0].assigned, 2);
        a.unassign("p1", "e1", 0).unwrap();
        assert_eq!(
            a.unassign("p1", "e1", 0),
            Err(EngineError::Qlik(QlikRefusal::AssignmentNotFound))
        );
        assert_eq!(a.assign("p1", "e3", 0), Ok(true));
    }

    #[test]
    fn scheduled_removal_at_the_start_of_its_day() {
        let a = account(1);
        let now = parse_instant("2026-11-25T12:00:00Z").unwrap();
        let day = parse_instant("2026-11-26").unwrap();
        a.assign("p1", "e1", now).unwrap();
        a.schedule("p1", "e1", Some(("2026-11-26".into(), day)), now)
            .unwrap();
        assert_eq!(a.packs(day - 1)[0].assigned, 1);
        assert_eq!(a.packs(day)[0].assigned, 0, "reads see the removal at once");
        assert!(a.assignments(None, None, None, 10, day).0.is_empty());
        // A change after the instant removes it first, so the seat is free.
        assert_eq!(a.assign("p1", "e2", day), Ok(true));
        assert_eq!(a.sweep(day + DAY_MS), 0);
        // Cancelling: None.
        a.schedule(
            "p1",
            "e2",
            Some(("2026-11-28".into(), day + 2 * DAY_MS)),
            day,
        )
        .unwrap();
        a.schedule("p1", "e2", None, day).unwrap();
        assert_eq!(a.sweep(day + 3 * DAY_MS), 0);
        assert_eq!(
            a.schedule("p1", "e2", Some(("2026-11-26".into(), day)), day),
            Err(EngineError::Invalid(
                "expirationDate",
                "must be a day after today"
            ))
        );
    }
}
