//! Validation of admin-written specs, and the conversions of the
//! accounting primitives' refusals into [`EngineError`].

use super::*;

/// Instant from an optional ISO 8601 string. A bare date (`2031-03-16`) as an end
/// means "through that day": the instant is the next midnight.
pub fn end_instant(s: &Option<String>) -> Millis {
    match s.as_deref().map(str::trim) {
        None | Some("") => i64::MAX,
        Some(v) => match parse_instant(v) {
            Some(t) if v.len() == 10 => t + DAY_MS,
            Some(t) => t,
            None => i64::MAX,
        },
    }
}

/// The first instant (UTC) of a `YYYY-MM-DD` day.
pub(super) fn yext_day(d: &str) -> R<Millis> {
    if d.len() != 10 {
        return Err(EngineError::Invalid("expirationDate", "must be YYYY-MM-DD"));
    }
    parse_instant(d).ok_or(EngineError::Invalid("expirationDate", "must be YYYY-MM-DD"))
}

pub(super) fn start_instant(s: &Option<String>) -> Millis {
    s.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .and_then(parse_instant)
        .unwrap_or(i64::MIN)
}

pub(super) fn check_date(field: &'static str, s: &Option<String>) -> R<()> {
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(()),
        Some(v) if parse_instant(v).is_some() => Ok(()),
        Some(_) => Err(EngineError::Invalid(
            field,
            "must be an ISO 8601 date or date-time",
        )),
    }
}

/// Deepest nesting of free-form JSON (metadata, Qlik parameter values) an
/// admin may store. The log and snapshots wrap a stored value a few levels
/// deeper and decode it with serde_json's limit of 128: a value accepted here
/// must never be one that recovery cannot read back.
pub const JSON_DEPTH_MAX: usize = 32;

/// Refuses free-form JSON nested deeper than [`JSON_DEPTH_MAX`].
pub fn check_json_depth(field: &'static str, v: &serde_json::Value) -> R<()> {
    fn depth(v: &serde_json::Value, d: usize) -> usize {
        if d > JSON_DEPTH_MAX {
            return d;
        }
        match v {
            serde_json::Value::Array(a) => a.iter().map(|x| depth(x, d + 1)).max().unwrap_or(d + 1),
            serde_json::Value::Object(m) => {
                m.values().map(|x| depth(x, d + 1)).max().unwrap_or(d + 1)
            }
            _ => d,
        }
    }
    if depth(v, 0) > JSON_DEPTH_MAX {
        return Err(EngineError::Invalid(
            field,
            "nested too deeply (at most 32 levels)",
        ));
    }
    Ok(())
}

// Refusal messages are static strings that spell these values out.
const _: () = assert!(DEVICE_VARIABLE_BYTES_MAX == 4096 && BUNDLE_PRODUCTS_MAX == 100);

/// Longest product short code, bytes.
pub const SHORT_CODE_BYTES_MAX: usize = 128;
/// Longest license key and feature code, bytes.
pub const KEY_BYTES_MAX: usize = 256;
/// Longest license user e-mail, bytes (RFC 5321's path limit).
pub const EMAIL_BYTES_MAX: usize = 320;

/// Longest text of a release's fields (URLs, versions, hashes), bytes.
pub const RELEASE_TEXT_BYTES_MAX: usize = 2048;

pub(super) fn validate_releases(releases: &[ReleaseSpec]) -> R<()> {
    if releases.len() > PRODUCT_RELEASES_MAX {
        return Err(EngineError::Invalid("releases", "too many (at most 1000)"));
    }
    for r in releases {
        if r.version.is_empty() || r.installation_file.is_empty() {
            return Err(EngineError::Invalid(
                "releases",
                "each needs a version and an installation_file",
            ));
        }
        let texts = [
            &r.version,
            &r.installation_file,
            &r.environment,
            &r.channel,
            &r.hash_md5,
            &r.size,
            &r.eula_link,
            &r.release_notes_link,
            &r.requires_version,
        ];
        if texts.iter().any(|t| t.len() > RELEASE_TEXT_BYTES_MAX) {
            return Err(EngineError::Invalid(
                "releases",
                "a text field is longer than 2048 bytes",
            ));
        }
        check_date("release_date", &r.release_date)?;
    }
    Ok(())
}

pub(super) fn validate_bundle(spec: &ProductSpec) -> R<()> {
    let codes = &spec.bundle_products;
    if codes.len() > BUNDLE_PRODUCTS_MAX {
        return Err(EngineError::Invalid(
            "bundle_products",
            "too many (at most 100)",
        ));
    }
    for (i, c) in codes.iter().enumerate() {
        if c.is_empty()
            || c.len() > SHORT_CODE_BYTES_MAX
            || *c == spec.short_code
            || codes[..i].contains(c)
        {
            return Err(EngineError::Invalid(
                "bundle_products",
                "short codes of other products, each once",
            ));
        }
    }
    Ok(())
}

pub(super) fn validate_license(spec: &LicenseSpec) -> R<()> {
    check_json_depth("metadata", &spec.metadata)?;
    check_date("validity_period", &spec.validity_period)?;
    check_date("start_date", &spec.start_date)?;
    check_date("maintenance_period", &spec.maintenance_period)?;
    if spec.max_transfers < -1 {
        return Err(EngineError::Invalid(
            "max_transfers",
            "must be -1 (unlimited) or more",
        ));
    }
    if spec.max_consumptions < 0 || spec.max_overages < 0 {
        return Err(EngineError::Invalid(
            "max_consumptions",
            "must not be negative",
        ));
    }
    check_floating_and_period(
        spec.floating_users,
        spec.reset_consumption,
        spec.consumption_period.is_some(),
    )
}

pub(super) fn validate_feature(spec: &FeatureSpec) -> R<()> {
    check_json_depth("metadata", &spec.metadata)?;
    if spec.code.is_empty() || spec.code.len() > KEY_BYTES_MAX {
        return Err(EngineError::Invalid("code", "must be 1 to 256 bytes"));
    }
    check_date("expiry_date", &spec.expiry_date)?;
    if spec.max_consumption < 0 || spec.max_overages < 0 {
        return Err(EngineError::Invalid(
            "max_consumption",
            "must not be negative",
        ));
    }
    check_floating_and_period(
        spec.floating_users,
        spec.reset_consumption,
        spec.consumption_period.is_some(),
    )
}

pub(super) fn lease_err(_: LeasesExhausted) -> EngineError {
    EngineError::FloatingNotAvailable
}

pub(super) fn meter_err(e: MeterError) -> EngineError {
    match e {
        MeterError::LimitReached => EngineError::ConsumptionLimitReached,
        MeterError::NegativeNotAllowed => EngineError::NegativeConsumptionNotAllowed,
        MeterError::BelowZero => EngineError::ConsumptionBelowZero,
        MeterError::Overflow => EngineError::ConsumptionOverflow,
    }
}

/// The rules a license and a feature share: floating seats within a lease
/// pool's limit, and a period to reset consumption in when it resets.
fn check_floating_and_period(floating_users: u32, reset: bool, has_period: bool) -> R<()> {
    if floating_users > lease::LEASE_POOL_SEATS_MAX {
        return Err(EngineError::Invalid("floating_users", "too large"));
    }
    if reset && !has_period {
        return Err(EngineError::Invalid(
            "consumption_period",
            "required when reset_consumption is true",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refusals are static strings; each names its limit's value.
    #[test]
    fn limit_messages_name_their_limits() {
        let invalid = |r: R<()>| match r {
            Err(EngineError::Invalid(_, why)) => why.to_string(),
            other => panic!("{other:?}"),
        };
        let mut deep = serde_json::json!(1);
        for _ in 0..=JSON_DEPTH_MAX {
            deep = serde_json::json!([deep]);
        }
        assert!(invalid(check_json_depth("x", &deep)).contains(&JSON_DEPTH_MAX.to_string()));
        let release = ReleaseSpec {
            id: None,
            version: "1".into(),
            installation_file: "u".into(),
            environment: String::new(),
            channel: String::new(),
            release_date: None,
            hash_md5: String::new(),
            size: String::new(),
            eula_link: String::new(),
            release_notes_link: String::new(),
            requires_version: String::new(),
            enabled: true,
        };
        let many = vec![release.clone(); PRODUCT_RELEASES_MAX + 1];
        assert!(invalid(validate_releases(&many)).contains(&PRODUCT_RELEASES_MAX.to_string()));
        let long = ReleaseSpec {
            version: "v".repeat(RELEASE_TEXT_BYTES_MAX + 1),
            ..release
        };
        assert!(invalid(validate_releases(&[long])).contains(&RELEASE_TEXT_BYTES_MAX.to_string()));
    }
}
