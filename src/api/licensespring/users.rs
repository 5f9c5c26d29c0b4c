//! License users' own calls: `change_password`.

use super::*;

/// `POST change_password` `{username, password, new_password}`: the current
/// password must be right; the new one replaces it (its hash is logged like
/// every change), which ends the cached verifications of the old one.
/// Answers the string `password_changed`.
pub(super) async fn change_password(app: &App, tenant: Id, p: &Params<'_>) -> Answer {
    let username = p.required("username")?;
    let new_password = p.required("new_password")?;
    let user = signed_in(app, tenant, &username, p).await?;
    let new_password = new_password.into_owned();
    // argon2 is slow by design: on the password workers.
    let hash = app
        .passwords
        .hash_on_worker(new_password)
        .await?
        .map_err(|_| INVALID_PARAMETERS)?;
    let mut spec = user.spec.read().clone();
    spec.password_hash = hash;
    spec.is_initial_password = false;
    apply(app, Command::PutUser { id: user.id, spec }).await?;
    Ok(string_answer(PASSWORD_CHANGED))
}

const PASSWORD_CHANGED: &str = "password_changed";
