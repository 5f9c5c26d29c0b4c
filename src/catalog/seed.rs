//! The streaming reader: serde seeds that walk the document and hand each
//! tenant and license to the [`Loader`](super::loader::Loader) as it is parsed.

use std::borrow::Cow;
use std::cell::RefCell;

use serde_json::{Map, Value};

use super::loader::{LicenseParts, Loader, Tenant, TenantParts};
use super::source::Source;
use super::{err, joined};

/// The document: `{"tenants": [...]}`.
pub(super) struct CatalogSeed<'l, 'a>(pub(super) &'l mut Loader<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for CatalogSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CatalogSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a catalog object with `tenants`")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "tenants" => map.next_value_seed(TenantsSeed(&mut *self.0))?,
                // Not state: read at every start by `catalog::fault_rules`.
                "faults" => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                other => {
                    return Err(serde::de::Error::unknown_field(
                        other,
                        &["tenants", "faults"],
                    ));
                }
            }
        }
        Ok(())
    }
}

pub(super) struct TenantsSeed<'l, 'a>(&'l mut Loader<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for TenantsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TenantsSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of tenants")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut ti = 0;
        while seq
            .next_element_seed(TenantSeed {
                loader: &mut *self.0,
                index: ti,
            })?
            .is_some()
        {
            ti += 1;
        }
        Ok(())
    }
}

pub(super) struct TenantSeed<'l, 'a> {
    pub(super) loader: &'l mut Loader<'a>,
    pub(super) index: usize,
}

pub(super) const TENANT_FIELDS: &[&str] = &[
    "name",
    "parent",
    "api_keys",
    "products",
    "customers",
    "users",
    "licenses",
    "qlik",
    "yext",
    "informatica",
    "webhooks",
];

impl<'de> serde::de::DeserializeSeed<'de> for TenantSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TenantSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tenant object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let tp = format!("tenants[{}]", self.index);
        let mut parts = TenantParts::default();
        let mut created: Option<Tenant> = None;
        // Licenses met before the tenant's name and products (as in a file
        // written with sorted keys): kept until the tenant is complete.
        let mut buffered: Option<Vec<Map<String, Value>>> = None;
        // Subscriptions name licenses: made once the tenant is complete.
        let mut webhooks: Vec<Map<String, Value>> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if created.is_some()
                && !matches!(
                    &*key,
                    "licenses" | "api_keys" | "qlik" | "yext" | "informatica" | "webhooks"
                )
            {
                let e = err(
                    format!("{tp}.{key}"),
                    "must come before `licenses` when licenses follow the tenant's name and products (they are then loaded as they are read)",
                );
                return Err(self.loader.fail(e));
            }
            match &*key {
                "name" => parts.name = Some(map.next_value()?),
                "parent" => parts.parent = map.next_value()?,
                "api_keys" => {
                    let keys: Vec<Map<String, Value>> = map.next_value()?;
                    match &created {
                        // Licenses were streamed already: add the keys now.
                        Some(t) => {
                            if let Err(e) = self.loader.api_keys(&tp, t.id, keys) {
                                return Err(self.loader.fail(e));
                            }
                        }
                        None => parts.api_keys = keys,
                    }
                }
                section @ ("qlik" | "yext" | "informatica") => {
                    let m: Map<String, Value> = map.next_value()?;
                    match &created {
                        Some(t) => {
                            if let Err(e) = self.loader.vendor(&tp, t.id, section, m) {
                                return Err(self.loader.fail(e));
                            }
                        }
                        None => parts.vendors.push((section.to_string(), m)),
                    }
                }
                "webhooks" => webhooks = map.next_value()?,
                "products" => parts.products = map.next_value()?,
                "customers" => parts.customers = map.next_value()?,
                "users" => parts.users = map.next_value()?,
                "licenses" if parts.name.is_none() || parts.products.is_empty() => {
                    if buffered.is_some() {
                        return Err(serde::de::Error::duplicate_field("licenses"));
                    }
                    buffered = Some(map.next_value()?);
                }
                "licenses" => {
                    let tenant = match created.take() {
                        Some(t) => t,
                        None => match self.loader.tenant(&tp, std::mem::take(&mut parts)) {
                            Ok(t) => t,
                            Err(e) => return Err(self.loader.fail(e)),
                        },
                    };
                    map.next_value_seed(LicensesSeed {
                        loader: &mut *self.loader,
                        tenant: &tenant,
                        path: &tp,
                    })?;
                    created = Some(tenant);
                }
                other => return Err(serde::de::Error::unknown_field(other, TENANT_FIELDS)),
            }
        }
        let tenant = match created {
            Some(t) => t,
            None => {
                let tenant = match self.loader.tenant(&tp, parts) {
                    Ok(t) => t,
                    Err(e) => return Err(self.loader.fail(e)),
                };
                for (li, m) in buffered.into_iter().flatten().enumerate() {
                    let p = format!("{tp}.licenses[{li}]");
                    if let Err(e) = self.loader.license(&tenant, &p, m) {
                        return Err(self.loader.fail(e));
                    }
                }
                tenant
            }
        };
        if let Err(e) = self.loader.webhooks(&tp, tenant.id, webhooks) {
            return Err(self.loader.fail(e));
        }
        Ok(())
    }
}

/// A tenant's `licenses`, each applied as soon as it is parsed. The
/// licenses are read by [`Source::next_license`](super::source::Source),
/// as slices; serde_json reads the array's brackets.
pub(super) struct LicensesSeed<'l, 'a, 't> {
    pub(super) loader: &'l mut Loader<'a>,
    pub(super) tenant: &'t Tenant,
    pub(super) path: &'t str,
}

impl<'de> serde::de::DeserializeSeed<'de> for LicensesSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for LicensesSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of licenses")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        let source = self.loader.source;
        let mut li = 0usize;
        loop {
            let next = source.borrow_mut().next_license(li == 0);
            let p = format_args!("{}.licenses[{li}]", self.path);
            let parts = match next {
                Ok(Some(parts)) => parts,
                Ok(None) => return Ok(()),
                Err(f) => {
                    let at = joined(&p, &f.inner_path);
                    return Err(self.loader.fail(err(at, f.message)));
                }
            };
            if let Err(e) = self.loader.license_parts(self.tenant, &p, parts) {
                return Err(self.loader.fail(e));
            }
            li += 1;
        }
    }
}

/// One license: its `features` and `devices` typed as they are parsed (no
/// JSON tree is built for them: a third of a generated catalog load went
/// to building and converting those trees), the other fields kept for its
/// spec.
impl<'de> serde::Deserialize<'de> for LicenseParts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LicenseParts, D::Error> {
        d.deserialize_map(LicensePartsVisitor)
    }
}

struct LicensePartsVisitor;

impl<'de> serde::de::Visitor<'de> for LicensePartsVisitor {
    type Value = LicenseParts;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a license object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<LicenseParts, A::Error> {
        let mut parts = LicenseParts::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            // A repeated key keeps its last value, as a JSON object read
            // into a map does.
            match &*key {
                "features" => parts.features = map.next_value()?,
                "devices" => parts.devices = map.next_value()?,
                _ => {
                    let v: Value = map.next_value()?;
                    parts.rest.insert(key.into_owned(), v);
                }
            }
        }
        Ok(parts)
    }
}

/// The document read for its `faults` only: `tenants` is skipped by the
/// [`Source`] (its bytes are not parsed), other keys are ignored.
pub(super) struct FaultsSeed<'s, 'i>(pub(super) &'s RefCell<Source<'i>>);

#[derive(serde::Deserialize)]
struct Rules {
    rules: Vec<crate::faults::Rule>,
}

impl<'de> serde::de::DeserializeSeed<'de> for FaultsSeed<'_, '_> {
    type Value = Option<Vec<crate::faults::Rule>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FaultsSeed<'_, '_> {
    type Value = Option<Vec<crate::faults::Rule>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a catalog object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rules = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "faults" => rules = map.next_value::<Option<Rules>>()?.map(|r| r.rules),
                "tenants" => map.next_value_seed(SkipSeed(self.0))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(rules)
    }
}

/// A value the [`Source`] skips: serde_json has read the `:` before it
/// and nothing after, and reads on after the value.
struct SkipSeed<'s, 'i>(&'s RefCell<Source<'i>>);

impl<'de> serde::de::DeserializeSeed<'de> for SkipSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, _d: D) -> Result<(), D::Error> {
        self.0
            .borrow_mut()
            .skip_value()
            .map_err(|e| serde::de::Error::custom(format!("reading the catalog: {e}")))
    }
}
