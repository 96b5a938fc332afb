//! The intake's settings, apart from its wiring: the controller's configuration holds them without
//! depending on the HTTP handler.

use super::rules::Rules;

/// The Alertmanager intake's settings (see [`crate::alerts`]), checked at start.
#[derive(Clone)]
pub struct IntakeConfig {
    /// The bearer token Alertmanager sends (`http_config.authorization`). A secret: redacted
    /// everywhere, never logged.
    pub token: String,
    pub rules: Rules,
}

/// Without the token: a settings dump never shows it.
impl std::fmt::Debug for IntakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeConfig")
            .field("token", &"[REDACTED]")
            .field("rules", &self.rules)
            .finish()
    }
}
