//! Telling people how runs went. So far: health pings to a monitoring service
//! (`BACKUP_HEALTHCHECK_URL`). Notification URLs, email and templates come next.

pub mod health;

pub use health::HealthCheck;
