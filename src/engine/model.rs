//! Entities of the engine. Each has a *spec* (the configuration an admin writes,
//! carried by commands, serialisable) and a runtime entry that holds the spec
//! behind a lock plus the live counters (seat pools, lease pools, meters).

use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;

/// The engine's sharded maps: DashMap with foldhash, a fast hash seeded per
/// process (keys such as license keys come from clients, so the seed keeps
/// their placement unpredictable). SipHash, the default, was 12 % of a
/// million-license recovery.
pub type Map<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// An empty [`Map`].
pub fn new_map<K: Eq + std::hash::Hash, V>() -> Map<K, V> {
    DashMap::with_hasher(foldhash::fast::RandomState::default())
}
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lease::LeasePool;
use super::meter::{Meter, MeterLimits};
use super::seat::SeatPool;
use super::time::{Millis, Period, HOUR_MS, MINUTE_MS};

pub type Id = u64;

fn empty_object() -> Value {
    Value::Object(Default::default())
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_floating_timeout() -> u32 {
    120
}

// ---------------------------------------------------------------- tenants, keys

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<Id>,
}

#[derive(Debug)]
pub struct Tenant {
    pub id: Id,
    /// Admin-written configuration; read rarely (admin API, listing).
    pub spec: RwLock<TenantSpec>,
    /// short_code -> product; read on every LicenseSpring request (sharded, no global lock).
    pub products_by_code: Map<Box<str>, Arc<Product>>,
    /// lower-cased email -> license user; read on every user-based request.
    pub users_by_email: Map<Box<str>, Arc<LicenseUser>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    ReadWrite,
    ReadOnly,
}

impl Role {
    pub fn can_write(self) -> bool {
        !matches!(self, Role::ReadOnly)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    pub tenant_id: Id,
    pub api_key: String,
    pub shared_key: String,
    pub role: Role,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug)]
pub struct ApiKey {
    pub tenant_id: Id,
    pub api_key: Box<str>,
    /// HMAC secret; fixed for the key's life (rotate by issuing a new key).
    pub shared_key: Box<str>,
    pub role: Role,
    /// Flipped by revocation; read on every request without a lock.
    pub revoked: AtomicBool,
    /// How records and logs name the key (see [`ApiKey::id_of`]), computed once.
    pub key_id: Box<str>,
}

impl ApiKey {
    /// An API key's id: `key:` and the first 16 hex digits of its SHA-256.
    /// A bearer key is itself a credential, so records and logs name it by
    /// this id and never write the key.
    pub fn id_of(api_key: &str) -> Box<str> {
        use sha2::Digest;
        use std::fmt::Write;
        let digest = sha2::Sha256::digest(api_key.as_bytes());
        let mut s = String::with_capacity(20);
        s.push_str("key:");
        for b in &digest[..8] {
            let _ = write!(s, "{b:02x}");
        }
        s.into()
    }

    pub fn spec(&self) -> ApiKeySpec {
        ApiKeySpec {
            tenant_id: self.tenant_id,
            api_key: self.api_key.to_string(),
            shared_key: self.shared_key.to_string(),
            role: self.role,
            revoked: self.revoked.load(Ordering::Acquire),
        }
    }
}

// ---------------------------------------------------------------- products

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "license-key", alias = "license_key", alias = "key")]
    LicenseKey,
    #[serde(rename = "user")]
    User,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::LicenseKey => "license-key",
            AuthMethod::User => "user",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSpec {
    pub tenant_id: Id,
    pub short_code: String,
    pub name: String,
    pub authorization_method: AuthMethod,
    /// Default floating timeout for new licenses, minutes.
    #[serde(default = "default_floating_timeout")]
    pub floating_timeout: u32,
    /// Longest borrow, hours.
    #[serde(default)]
    pub max_borrow_time: u32,
    /// Length of a trial license issued by `trial_key`, days (0: no trials).
    #[serde(default)]
    pub trial_days: u32,
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// Installation files of the product's versions, oldest first (LicenseSpring
    /// `versions` and `installation_file`), at most [`PRODUCT_RELEASES_MAX`].
    #[serde(default)]
    pub releases: Vec<ReleaseSpec>,
    /// A bundle's products, by short code (LicenseSpring `activate_bundle`,
    /// `check_bundle`, `deactivate_bundle`); empty for a plain product. A
    /// bundle license is the license with the bundle's key on each of them.
    #[serde(default)]
    pub bundle_products: Vec<String>,
}

/// Versions with installation files a product may list.
pub const PRODUCT_RELEASES_MAX: usize = 1_000;
/// Products one bundle may hold.
pub const BUNDLE_PRODUCTS_MAX: usize = 100;

/// One installation file of one version of a product, for one environment
/// (`win64`, `linux`, `mac`, ...) and release channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    /// Answered as the installation file's `id`; its position (from 1) if absent.
    #[serde(default)]
    pub id: Option<u64>,
    pub version: String,
    /// Download URL.
    pub installation_file: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub release_date: Option<String>,
    #[serde(default)]
    pub hash_md5: String,
    #[serde(default)]
    pub size: String,
    #[serde(default)]
    pub eula_link: String,
    #[serde(default)]
    pub release_notes_link: String,
    #[serde(default)]
    pub requires_version: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

#[derive(Debug)]
pub struct Product {
    pub id: Id,
    pub tenant_id: Id,
    /// Fixed at creation: it is the product's key in `Tenant::products_by_code`.
    pub short_code: Box<str>,
    pub authorization_method: AuthMethod,
    pub spec: RwLock<ProductSpec>,
    /// license key -> license, for key-based products (sharded; the hot lookup).
    /// Keys of up to 24 bytes sit inline in the table (`CompactString`): the
    /// lookup compares them without following a pointer to cold memory, which
    /// at a million licenses was a tenth of a check's CPU (a cache miss).
    pub licenses_by_key: Map<compact_str::CompactString, Arc<License>>,
}

// ---------------------------------------------------------------- customers, users

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerSpec {
    pub tenant_id: Id,
    pub email: String,
    pub company_name: String,
    pub reference: String,
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
    pub city: String,
    pub postcode: String,
    pub state: String,
    pub country: String,
    pub address: String,
    pub customer_account: Option<String>,
    pub metadata: Value,
}

#[derive(Debug)]
pub struct Customer {
    pub id: Id,
    pub spec: RwLock<CustomerSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub tenant_id: Id,
    pub email: String,
    /// Salted slow hash (argon2 PHC string). Commands carry the hash, never the password.
    pub password_hash: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub phone_number: String,
    #[serde(default = "yes")]
    pub is_initial_password: bool,
    #[serde(default = "one")]
    pub max_activations: u32,
    #[serde(default)]
    pub allow_unlimited_activations: bool,
    #[serde(default)]
    pub customer_id: Option<Id>,
}

#[derive(Debug)]
pub struct LicenseUser {
    pub id: Id,
    pub tenant_id: Id,
    pub spec: RwLock<UserSpec>,
    /// Bumped whenever the password hash changes so cached verifications die with it.
    pub password_epoch: AtomicU64,
    /// Licenses assigned to this user (ids); short, read per user-based request.
    pub licenses: RwLock<Vec<Id>>,
}

// ---------------------------------------------------------------- licenses

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LicenseType {
    Perpetual,
    #[serde(alias = "time_limited")]
    TimeLimited,
    Subscription,
    Consumption,
}

impl LicenseType {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseType::Perpetual => "perpetual",
            LicenseType::TimeLimited => "time-limited",
            LicenseType::Subscription => "subscription",
            LicenseType::Consumption => "consumption",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomField {
    pub name: String,
    #[serde(default = "text")]
    pub data_type: String,
    pub value: String,
}
fn text() -> String {
    "text".into()
}

/// What an admin configures on a license. Counters (times_activated, transfer
/// count, consumption totals) live beside it in atomics, not here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseSpec {
    pub product_id: Id,
    /// Key-based products: the license key. User-based: None.
    #[serde(default)]
    pub license_key: Option<String>,
    /// User-based products: the license user.
    #[serde(default)]
    pub user_id: Option<Id>,
    #[serde(default)]
    pub customer_id: Option<Id>,
    #[serde(default = "perpetual")]
    pub license_type: LicenseType,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub is_trial: bool,
    #[serde(default)]
    pub trial_days: Option<u32>,
    /// Expiry instant (ISO 8601); None never expires.
    #[serde(default)]
    pub validity_period: Option<String>,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub allow_grace_period: bool,
    /// Hours past validity_period during which the license still works.
    #[serde(default)]
    pub grace_period: u32,
    #[serde(default)]
    pub enable_maintenance_period: bool,
    #[serde(default)]
    pub maintenance_period: Option<String>,
    #[serde(default = "one")]
    pub max_activations: u32,
    #[serde(default)]
    pub allow_unlimited_activations: bool,
    /// Transfers allowed (deactivate here, activate elsewhere). 0: none; -1: unlimited.
    #[serde(default)]
    pub max_transfers: i64,
    #[serde(default)]
    pub prevent_vm: bool,
    #[serde(default)]
    pub is_floating: bool,
    #[serde(default)]
    pub is_floating_cloud: bool,
    #[serde(default)]
    pub floating_users: u32,
    /// Minutes a floating seat holds without a renewal.
    #[serde(default = "default_floating_timeout")]
    pub floating_timeout: u32,
    #[serde(default)]
    pub can_borrow: bool,
    /// Longest borrow, hours.
    #[serde(default)]
    pub max_borrow_time: u32,
    #[serde(default)]
    pub max_consumptions: i64,
    #[serde(default)]
    pub allow_overages: bool,
    #[serde(default)]
    pub max_overages: i64,
    #[serde(default)]
    pub allow_unlimited_consumptions: bool,
    #[serde(default)]
    pub allow_negative_consumptions: bool,
    #[serde(default)]
    pub reset_consumption: bool,
    #[serde(default)]
    pub consumption_period: Option<Period>,
    #[serde(default)]
    pub max_license_users: u32,
    #[serde(default)]
    pub order_store_id: String,
    #[serde(default)]
    pub custom_fields: Vec<CustomField>,
    #[serde(default = "empty_object")]
    pub metadata: Value,
}

impl LicenseSpec {
    /// A trial license of `product` as LicenseSpring's `trial_key` issues it:
    /// time-limited to the product's trial days from `now`, one activation,
    /// no floating, no consumption; `metadata` records whom it was issued to.
    pub fn trial(
        product_id: Id,
        license_key: Option<String>,
        user_id: Option<Id>,
        product: &ProductSpec,
        now: crate::engine::time::Millis,
        metadata: Value,
    ) -> LicenseSpec {
        let days = product.trial_days as crate::engine::time::Millis;
        LicenseSpec {
            product_id,
            license_key,
            user_id,
            customer_id: None,
            license_type: LicenseType::TimeLimited,
            enabled: true,
            active: true,
            is_trial: true,
            trial_days: Some(product.trial_days),
            validity_period: Some(crate::engine::time::format_instant(
                now + days * crate::engine::time::DAY_MS,
            )),
            start_date: None,
            allow_grace_period: false,
            grace_period: 0,
            enable_maintenance_period: false,
            maintenance_period: None,
            max_activations: 1,
            allow_unlimited_activations: false,
            max_transfers: 0,
            prevent_vm: false,
            is_floating: false,
            is_floating_cloud: false,
            floating_users: 0,
            floating_timeout: product.floating_timeout,
            can_borrow: false,
            max_borrow_time: 0,
            max_consumptions: 0,
            allow_overages: false,
            max_overages: 0,
            allow_unlimited_consumptions: false,
            allow_negative_consumptions: false,
            reset_consumption: false,
            consumption_period: None,
            max_license_users: 1,
            order_store_id: format!("trial_{now}"),
            custom_fields: Vec::new(),
            metadata,
        }
    }
}
fn perpetual() -> LicenseType {
    LicenseType::Perpetual
}

impl LicenseSpec {
    pub fn meter_limits(&self) -> MeterLimits {
        MeterLimits {
            max: self.max_consumptions,
            allow_overages: self.allow_overages,
            max_overages: self.max_overages,
            unlimited: self.allow_unlimited_consumptions,
            allow_negative: self.allow_negative_consumptions,
            reset: self.reset_consumption,
            period: self.consumption_period,
        }
    }

    pub fn floating_timeout_ms(&self) -> Millis {
        self.floating_timeout.max(1) as Millis * MINUTE_MS
    }

    pub fn max_borrow_ms(&self) -> Millis {
        self.max_borrow_time as Millis * HOUR_MS
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureType {
    Activation,
    Consumption,
}

impl FeatureType {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureType::Activation => "activation",
            FeatureType::Consumption => "consumption",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub code: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "activation")]
    pub feature_type: FeatureType,
    #[serde(default)]
    pub expiry_date: Option<String>,
    #[serde(default)]
    pub is_floating: bool,
    #[serde(default)]
    pub is_floating_cloud: bool,
    #[serde(default)]
    pub floating_users: u32,
    #[serde(default = "default_floating_timeout")]
    pub floating_timeout: u32,
    #[serde(default)]
    pub max_consumption: i64,
    #[serde(default)]
    pub allow_unlimited_consumptions: bool,
    #[serde(default)]
    pub allow_overages: bool,
    #[serde(default)]
    pub max_overages: i64,
    #[serde(default)]
    pub allow_negative_consumptions: bool,
    #[serde(default)]
    pub reset_consumption: bool,
    #[serde(default)]
    pub consumption_period: Option<Period>,
    #[serde(default = "empty_object")]
    pub metadata: Value,
}
fn activation() -> FeatureType {
    FeatureType::Activation
}

impl super::share::Spec for FeatureSpec {
    fn holds_float(&self) -> bool {
        super::share::value_holds_float(&self.metadata)
    }
}

impl super::share::Spec for LicenseSpec {
    fn holds_float(&self) -> bool {
        super::share::value_holds_float(&self.metadata)
    }
}

impl FeatureSpec {
    pub fn meter_limits(&self) -> MeterLimits {
        MeterLimits {
            max: self.max_consumption,
            allow_overages: self.allow_overages,
            max_overages: self.max_overages,
            unlimited: self.allow_unlimited_consumptions,
            allow_negative: self.allow_negative_consumptions,
            reset: self.reset_consumption,
            period: self.consumption_period,
        }
    }

    pub fn floating(&self) -> bool {
        self.is_floating || self.is_floating_cloud
    }
}

/// A feature's code, shared between features of equal code: one pointer
/// wide (a fat `Arc<str>` is two), which keeps a feature's allocation in
/// mimalloc's 80-byte class instead of the 96-byte one: 16 bytes on each of
/// the 4M features of a 1M-license catalog. Reads as a `str`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code(Arc<Box<str>>);

impl Code {
    pub fn new(code: &str) -> Code {
        Code(Arc::new(code.into()))
    }
}

impl From<Arc<Box<str>>> for Code {
    fn from(shared: Arc<Box<str>>) -> Code {
        Code(shared)
    }
}

impl std::ops::Deref for Code {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        &self.0
    }
}

#[derive(Debug)]
pub struct Feature {
    pub id: Id,
    /// The revision and the feature type in one word (see [`Feature::revision`],
    /// [`Feature::is_consumption`]): they change together, and one word instead
    /// of two keeps a feature in a smaller allocation class (issue #3's memory).
    shape: AtomicU64,
    /// Fixed at creation: features are looked up by code on the hot path.
    /// Shared between features of equal code (see `Engine::feature_codes`).
    pub code: Code,
    /// Shared with every feature whose spec is equal (see `Engine::feature_specs`);
    /// a change replaces the `Arc`, never writes through it. One atomic
    /// pointer, read with `load()`: changed only under the license's
    /// features write lock, so writers never race; a reader that sees a new
    /// `revision()` (Acquire) then loads the new spec.
    pub spec: ArcSwap<FeatureSpec>,
    /// Parsed `expiry_date` (ms), `i64::MAX` when none; kept beside the spec so
    /// the hot path compares an integer instead of parsing a date.
    pub expires_at: std::sync::atomic::AtomicI64,
    pub floating: LeasePool,
    pub meter: Meter,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DeviceInfo {
    pub os_ver: String,
    pub hostname: String,
    pub ip: String,
    pub mac_address: String,
    pub is_vm: bool,
    pub vm_info: String,
    pub app_ver: String,
    pub sdk_ver: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceVariable {
    pub variable: String,
    pub value: String,
    pub created_at: Millis,
}

impl DeviceInfo {
    /// No field set (what most devices report, and every generated one).
    pub const EMPTY: DeviceInfo = DeviceInfo {
        os_ver: String::new(),
        hostname: String::new(),
        ip: String::new(),
        mac_address: String::new(),
        is_vm: false,
        vm_info: String::new(),
        app_ver: String::new(),
        sdk_ver: String::new(),
    };

    /// Kept as a device keeps it: nothing for an empty one.
    pub fn compact(info: &DeviceInfo) -> Option<Box<DeviceInfo>> {
        (*info != DeviceInfo::EMPTY).then(|| Box::new(info.clone()))
    }
}

/// A device's [`DeviceInfo`], stored (snapshots, images) exactly as the
/// plain struct always was, kept in memory boxed and only when not empty:
/// 8 bytes instead of 176 for the devices that report nothing (issue #18's
/// memory: a million activations).
mod device_info_serde {
    use super::DeviceInfo;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Box<DeviceInfo>>, s: S) -> Result<S::Ok, S::Error> {
        static EMPTY: DeviceInfo = DeviceInfo::EMPTY;
        v.as_deref().unwrap_or(&EMPTY).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Box<DeviceInfo>>, D::Error> {
        let info = DeviceInfo::deserialize(d)?;
        Ok((info != DeviceInfo::EMPTY).then(|| Box::new(info)))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: Id,
    /// A box, not a `String`: fixed once made (8 bytes less per device).
    pub hardware_id: Box<str>,
    /// None when empty (see [`Device::info`]).
    #[serde(with = "device_info_serde")]
    pub info: Option<Box<DeviceInfo>>,
    pub active: bool,
    pub blacklisted: bool,
    pub first_activated: Millis,
    pub last_activated: Millis,
    pub deactivated_at: Option<Millis>,
    /// Most devices have none: a `ThinVec` is one pointer then (stored as
    /// the `Vec` always was).
    pub variables: thin_vec::ThinVec<DeviceVariable>,
}

impl Device {
    /// What the device reported (all empty when nothing).
    pub fn info(&self) -> &DeviceInfo {
        static EMPTY: DeviceInfo = DeviceInfo::EMPTY;
        self.info.as_deref().unwrap_or(&EMPTY)
    }
}

/// Device records of a license, behind one lock: activation must check the
/// count and insert together (the seat pool holds the count for lock-free reads).
#[derive(Debug, Default)]
pub struct Devices {
    pub list: Vec<Device>,
    /// Hardware ids whose deactivation left a seat that another device may take
    /// as a transfer. Almost always empty: a `ThinVec` is one pointer then.
    pub vacated: thin_vec::ThinVec<String>,
}

impl Devices {
    /// Room for one more device. Most licenses hold one or two, so the list
    /// grows by one at first instead of jumping to Vec's minimum of four
    /// (a device record is about 250 bytes).
    pub fn reserve_one(&mut self) {
        let len = self.list.len();
        if len == self.list.capacity() {
            self.list.reserve_exact(if len < 4 { 1 } else { len / 2 });
        }
    }
}

#[derive(Debug)]
pub struct License {
    pub id: Id,
    pub tenant_id: Id,
    pub product_id: Id,
    /// Fixed at creation (it keys `Product::licenses_by_key`).
    pub license_key: Option<Box<str>>,
    /// Shared with every license whose spec is equal (see `Engine::license_specs`);
    /// its `license_key` is always None (the key is the field above; [`License::spec`]
    /// puts them together). A change replaces the `Arc`, never writes through it.
    pub spec: RwLock<Arc<LicenseSpec>>,
    /// What a check reads of the spec, mirrored so that it takes no lock
    /// (see [`License::usability`]): a sequence lock whose word holds the
    /// `enabled` and `active` flags beside the count of writes, and the two
    /// instants (ms) parsed from the spec's dates. Written only by the holder
    /// of the spec's write lock (or before the license is shared).
    pub(super) gate: AtomicU32,
    pub(super) starts_at: AtomicI64,
    /// End of validity plus the grace period when the spec allows one.
    pub(super) usable_until: AtomicI64,
    /// Activated devices (max_activations seats).
    pub activations: SeatPool,
    pub devices: RwLock<Devices>,
    pub transfer_count: AtomicU32,
    pub floating: LeasePool,
    pub consumption: Meter,
    /// Few per license: a short vector scanned by code beats a map.
    pub features: RwLock<Vec<Arc<Feature>>>,
}

impl Feature {
    /// Bit 0 of `shape`: the feature is a consumption feature.
    const CONSUMPTION_BIT: u64 = 1;
    /// Bit 1 of `shape`: the feature is floating (its spec's `floating()`).
    const FLOATING_BIT: u64 = 2;
    /// The revision proper starts at bit 2.
    const SHAPE_BITS: u32 = 2;
    /// Bit 63 of `shape`: the spec is being replaced (see
    /// [`Feature::spec_at_revision`]); revisions never reach it.
    const CHANGING_BIT: u64 = 1 << 63;

    pub fn new(
        id: Id,
        code: Code,
        spec: Arc<FeatureSpec>,
        revision: u64,
        expires_at: Millis,
        floating: LeasePool,
        meter: Meter,
    ) -> Feature {
        let f = Feature {
            id,
            shape: AtomicU64::new(0),
            code,
            spec: ArcSwap::new(spec),
            expires_at: std::sync::atomic::AtomicI64::new(expires_at),
            floating,
            meter,
        };
        f.set_shape(revision, &f.spec.load());
        f
    }

    /// Changes whenever the spec does (and differs between any two features
    /// ever created), so that surfaces may cache what they render from it.
    #[inline]
    pub fn revision(&self) -> u64 {
        self.shape.load(Ordering::Acquire)
    }

    /// `spec.feature_type == Consumption`, mirrored so that a consumption add
    /// reads an atomic instead of taking the spec's lock.
    #[inline]
    pub fn is_consumption(&self) -> bool {
        self.revision() & Self::CONSUMPTION_BIT != 0
    }

    /// `spec.floating()`, mirrored so that a check reads an atomic instead
    /// of taking the spec's lock.
    #[inline]
    pub fn is_floating(&self) -> bool {
        self.revision() & Self::FLOATING_BIT != 0
    }

    /// The spec and the revision it has, read as one: a sequence lock on
    /// `shape` (a change sets [`Self::CHANGING_BIT`], stores the spec, then
    /// publishes its new revision), so two answers rendered under one
    /// revision are always the same body (the signatures kept by stamp rely
    /// on it). Readers wait out a change under way: two stores long.
    pub fn spec_at_revision(&self) -> (u64, arc_swap::Guard<Arc<FeatureSpec>>) {
        let mut spins = 0u32;
        loop {
            let before = self.shape.load(Ordering::Acquire);
            if before & Self::CHANGING_BIT == 0 {
                let spec = self.spec.load();
                fence(Ordering::Acquire);
                if self.shape.load(Ordering::Relaxed) == before {
                    return (before, spec);
                }
            }
            spins += 1;
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Starts a change of the spec (see [`Feature::spec_at_revision`]): call
    /// under the license's features write lock (writers never overlap),
    /// then store the spec and its mirrors, then [`Feature::set_shape`].
    pub fn begin_change(&self) {
        let word = self.shape.load(Ordering::Relaxed);
        assert_eq!(word & Self::CHANGING_BIT, 0, "overlapping feature changes");
        self.shape
            .store(word | Self::CHANGING_BIT, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Publishes a new revision (from [`next_revision`]) with the spec's type
    /// and floating flag, ending a change begun by [`Feature::begin_change`]
    /// (or at creation): a reader that sees the new revision then loads the
    /// new spec.
    pub fn set_shape(&self, revision: u64, spec: &FeatureSpec) {
        let mut bits = 0;
        if spec.feature_type == FeatureType::Consumption {
            bits |= Self::CONSUMPTION_BIT;
        }
        if spec.floating() {
            bits |= Self::FLOATING_BIT;
        }
        self.shape
            .store((revision << Self::SHAPE_BITS) | bits, Ordering::Release);
    }
}

/// What decides whether a license may be used at an instant, read from a
/// license's mirror of its spec as one consistent whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usability {
    pub enabled: bool,
    pub active: bool,
    /// `i64::MIN` when the spec has no start date.
    pub starts_at: Millis,
    /// End of validity plus the grace period if allowed; `i64::MAX` never.
    pub usable_until: Millis,
}

impl Usability {
    /// End of validity without the grace period: `usable_until` less
    /// `spec`'s grace (`spec` of the same write: read under the spec's lock,
    /// or as of the same change).
    pub fn valid_until(&self, spec: &LicenseSpec) -> Millis {
        if spec.allow_grace_period && self.usable_until != i64::MAX {
            self.usable_until
                .saturating_sub(Millis::from(spec.grace_period) * HOUR_MS)
        } else {
            self.usable_until
        }
    }
}

impl License {
    /// Bit 0 of `gate`: a write is under way (readers retry).
    const GATE_WRITING: u32 = 1;
    const GATE_ENABLED: u32 = 2;
    const GATE_ACTIVE: u32 = 4;
    /// The count of writes starts at bit 3.
    const GATE_WRITE: u32 = 8;

    /// The usability fields as of one write (a sequence lock read: no
    /// atomic read-modify-write, so a check costs no cache-line ownership).
    #[inline]
    pub fn usability(&self) -> Usability {
        loop {
            let before = self.gate.load(Ordering::Acquire);
            if before & Self::GATE_WRITING != 0 {
                std::hint::spin_loop();
                continue;
            }
            let starts_at = self.starts_at.load(Ordering::Relaxed);
            let usable_until = self.usable_until.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.gate.load(Ordering::Relaxed) == before {
                return Usability {
                    enabled: before & Self::GATE_ENABLED != 0,
                    active: before & Self::GATE_ACTIVE != 0,
                    starts_at,
                    usable_until,
                };
            }
        }
    }

    /// Mirrors `spec` into the usability fields. Callers hold the spec's
    /// write lock (or own the license alone), so writes never overlap.
    pub(super) fn publish_usability(&self, spec: &LicenseSpec) {
        let until = super::end_instant(&spec.validity_period);
        let usable_until = if spec.allow_grace_period && until != i64::MAX {
            until.saturating_add(Millis::from(spec.grace_period) * HOUR_MS)
        } else {
            until
        };
        let word = self.gate.load(Ordering::Relaxed);
        assert_eq!(word & Self::GATE_WRITING, 0, "overlapping usability writes");
        self.gate
            .store(word | Self::GATE_WRITING, Ordering::Relaxed);
        fence(Ordering::Release);
        self.starts_at
            .store(super::start_instant(&spec.start_date), Ordering::Relaxed);
        self.usable_until.store(usable_until, Ordering::Relaxed);
        let count = (word & !(Self::GATE_WRITE - 1)).wrapping_add(Self::GATE_WRITE);
        let flags = u32::from(spec.enabled) * Self::GATE_ENABLED
            + u32::from(spec.active) * Self::GATE_ACTIVE;
        self.gate.store(count | flags, Ordering::Release);
    }

    /// End of validity without the grace period (`i64::MAX` never): the
    /// mirror less `spec`'s grace, `spec` being the one read under its lock.
    pub fn valid_until(&self, spec: &LicenseSpec) -> Millis {
        self.usability().valid_until(spec)
    }

    /// The license's full spec, key included.
    pub fn spec(&self) -> LicenseSpec {
        let mut s = (**self.spec.read()).clone();
        s.license_key = self.license_key.as_deref().map(str::to_string);
        s
    }

    /// `f` on the feature of code `code`, read in place under the features'
    /// read lock: no count is taken on it (the check's path). `f` must not
    /// write to the license's features.
    #[inline]
    pub fn with_feature<T>(&self, code: &str, f: impl FnOnce(&Arc<Feature>) -> T) -> Option<T> {
        self.features
            .read()
            .iter()
            .find(|x| &*x.code == code)
            .map(f)
    }

    pub fn feature(&self, code: &str) -> Option<Arc<Feature>> {
        self.with_feature(code, Arc::clone)
    }
}

/// Source of [`Feature::revision`] values: process-wide, so a re-created
/// feature never repeats an old revision.
static REVISIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn next_revision() -> u64 {
    REVISIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `n` consecutive revisions at once (the first is returned): one shared
/// increment for a license's features instead of one each.
pub fn next_revisions(n: u64) -> u64 {
    REVISIONS.fetch_add(n.max(1), std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device as snapshots always stored it: the info inline.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct StoredDevice {
        id: Id,
        hardware_id: String,
        info: DeviceInfo,
        active: bool,
        blacklisted: bool,
        first_activated: Millis,
        last_activated: Millis,
        deactivated_at: Option<Millis>,
        variables: Vec<DeviceVariable>,
    }

    /// A device kept with its info boxed (or none) is stored byte for byte
    /// as before, in postcard (snapshots) and JSON, and read back the same.
    #[test]
    fn a_compact_device_is_stored_as_before() {
        for info in [
            DeviceInfo::default(),
            DeviceInfo {
                hostname: "h".into(),
                is_vm: true,
                ..DeviceInfo::default()
            },
        ] {
            let variable = DeviceVariable {
                variable: "v".into(),
                value: "x".into(),
                created_at: 3,
            };
            let d = Device {
                id: 7,
                hardware_id: "hw".into(),
                info: DeviceInfo::compact(&info),
                active: true,
                blacklisted: false,
                first_activated: 1,
                last_activated: 2,
                deactivated_at: None,
                variables: thin_vec::thin_vec![variable.clone()],
            };
            assert_eq!(d.info.is_none(), info == DeviceInfo::default());
            let stored = StoredDevice {
                id: 7,
                hardware_id: "hw".into(),
                info: info.clone(),
                active: true,
                blacklisted: false,
                first_activated: 1,
                last_activated: 2,
                deactivated_at: None,
                variables: vec![variable],
            };
            let bytes = postcard::to_allocvec(&d).expect("encode");
            assert_eq!(bytes, postcard::to_allocvec(&stored).expect("encode"));
            assert_eq!(postcard::from_bytes::<Device>(&bytes).expect("decode"), d);
            let json = serde_json::to_string(&d).expect("json");
            assert_eq!(json, serde_json::to_string(&stored).expect("json"));
            assert_eq!(d.info(), &info);
        }
    }
}
