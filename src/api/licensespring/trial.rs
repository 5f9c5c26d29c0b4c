//! `trial_key`: one trial per device and product (and per e-mail on
//! user-based products).

use super::*;

pub(super) async fn trial_key(app: &App, tenant: Id, p: &Params<'_>, now: Millis) -> Answer {
    let product = product(app, tenant, p)?;
    let hw = p.required("hardware_id")?;
    let pspec = product.spec.read().clone();
    if pspec.trial_days == 0 {
        return Err(TRIAL_NOT_ALLOWED);
    }
    let email = p.text("email").map(|e| e.trim().to_ascii_lowercase());
    // One trial per device and product (and per email on user products): as
    // LicenseSpring documents, asking again answers the trial already issued.
    let issued = |l: &License| {
        let s = l.spec.read();
        s.is_trial && s.metadata.get("trial_hardware_id").and_then(Value::as_str) == Some(&*hw)
    };
    // User-based products name the trial's user by e-mail; looked up once.
    let user = match product.authorization_method {
        AuthMethod::LicenseKey => None,
        AuthMethod::User => {
            let email = email.as_deref().ok_or(MISSING_PARAMETERS)?;
            app.engine.user_by_email(tenant, email)
        }
    };
    let existing = match (&product.authorization_method, &user) {
        (AuthMethod::LicenseKey, _) => product
            .licenses_by_key
            .iter()
            .find(|l| issued(l))
            .map(|l| l.clone()),
        (AuthMethod::User, Some(u)) => app
            .engine
            .licenses_of_user(u, Some(product.id))
            .into_iter()
            .find(|l| l.spec.read().is_trial),
        (AuthMethod::User, None) => None,
    };
    if let Some(license) = existing {
        let key = license.license_key.as_deref().map(str::to_string);
        return trial_answer(app, &product, license, key, email, None, now).await;
    }
    let (user_id, initial_password) = match product.authorization_method {
        AuthMethod::LicenseKey => (None, None),
        AuthMethod::User => {
            let email = email.clone().ok_or(MISSING_PARAMETERS)?;
            match user {
                Some(u) => (Some(u.id), None),
                None => {
                    let password = crate::util::random_token(12);
                    let hash = app
                        .passwords
                        .hash_on_worker(password.clone())
                        .await?
                        .map_err(|_| INTERNAL)?;
                    let id = app.engine.next_id();
                    let spec = UserSpec {
                        tenant_id: tenant,
                        email: email.clone(),
                        password_hash: hash,
                        first_name: p.str("first_name").map(Cow::into_owned).unwrap_or_default(),
                        last_name: p.str("last_name").map(Cow::into_owned).unwrap_or_default(),
                        phone_number: p.str("phone").map(Cow::into_owned).unwrap_or_default(),
                        is_initial_password: true,
                        max_activations: 1,
                        allow_unlimited_activations: false,
                        customer_id: None,
                    };
                    apply(app, Command::PutUser { id, spec }).await?;
                    (Some(id), Some(password))
                }
            }
        }
    };
    let key = (product.authorization_method == AuthMethod::LicenseKey)
        .then(crate::util::random_license_key);
    let spec = LicenseSpec::trial(
        product.id,
        key.clone(),
        user_id,
        &pspec,
        now,
        json!({"trial_hardware_id": &*hw, "trial_email": email}),
    );
    let id = app.engine.next_id();
    apply(
        app,
        Command::PutLicense {
            id,
            spec,
            features: Vec::new(),
            now,
        },
    )
    .await?;
    let license = app.engine.license(id).ok_or(INTERNAL)?;
    trial_answer(app, &product, license, key, email, initial_password, now).await
}

/// A trial license as `trial_key` answers it (with the user's e-mail and
/// initial password on user-based products).
pub(super) async fn trial_answer(
    app: &App,
    product: &Product,
    license: Arc<License>,
    key: Option<String>,
    email: Option<String>,
    initial_password: Option<String>,
    now: Millis,
) -> Answer {
    let auth_value = Cow::Owned(key.or(email.clone()).unwrap_or_default());
    let mut m = license_object(
        app,
        &Target {
            license,
            auth_value,
        },
        &Render::default(),
        now,
        Map::new(),
    )
    .await;
    if let Some(e) = email.filter(|_| product.authorization_method == AuthMethod::User) {
        m.insert("license_user".into(), e.into());
        m.insert(
            "initial_password".into(),
            initial_password.map(Value::from).unwrap_or(Value::Null),
        );
    }
    to_vec(&Value::Object(m))
}
