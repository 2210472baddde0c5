//! Which notifications reach the caller by e-mail.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::AppJson;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::mail::{self, NotificationPreferences};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(my_preferences, set_my_preferences))
}

/// The caller's e-mail preferences: on or off overall and per kind (on unless turned off).
#[utoipa::path(
    get,
    path = "/me/notification-preferences",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Preferences, every kind listed", body = NotificationPreferences),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn my_preferences(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<AppJson<NotificationPreferences>> {
    Ok(AppJson(mail::preferences(&state.db, &principal.username).await?))
}

/// Replace the caller's e-mail preferences; kinds left out are on. An unknown
/// kind is `400 bad-request`.
#[utoipa::path(
    put,
    path = "/me/notification-preferences",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    request_body = NotificationPreferences,
    responses(
        (status = 200, description = "The preferences now", body = NotificationPreferences),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn set_my_preferences(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(wanted): AppJson<NotificationPreferences>,
) -> Result<AppJson<NotificationPreferences>> {
    Ok(AppJson(mail::set_preferences(&state.db, &principal.username, &wanted).await?))
}
