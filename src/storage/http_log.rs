//! The S3 and Azure clients retry inside `object_store` (under our one budget, see
//! [`crate::net::RetryPolicy::object_store`]); this wraps their HTTP client so that every
//! failed attempt is one WARN line naming the schedule and destination, as for the other
//! destinations. Only the method and the path are logged: never a query (SAS tokens) or a
//! header.

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};

/// Builds object_store's usual reqwest client, wrapped in [`Logged`].
#[derive(Debug)]
pub(super) struct LoggingConnector {
    /// Who is named in the log lines and whose retries are counted.
    pub retry: crate::net::RetryPolicy,
}

impl HttpConnector for LoggingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Logged {
            inner,
            retry: self.retry.clone(),
        }))
    }
}

#[derive(Debug)]
struct Logged {
    inner: HttpClient,
    retry: crate::net::RetryPolicy,
}

#[async_trait]
impl HttpService for Logged {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let result = self.inner.execute(req).await;
        match &result {
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                self.retry.note_retry();
                tracing::warn!(
                    "{}: {method} {path} answered {}; trying again within BACKUP_RETRY_TIMEOUT",
                    self.retry.label,
                    r.status()
                );
            }
            Err(e) => {
                self.retry.note_retry();
                tracing::warn!(
                    "{}: {method} {path}: {}; trying again within BACKUP_RETRY_TIMEOUT if it may \
                     pass",
                    self.retry.label,
                    crate::net::error_chain(e)
                );
            }
            Ok(_) => {}
        }
        result
    }
}
