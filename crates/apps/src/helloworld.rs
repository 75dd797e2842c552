//! helloworld: `GET /hello` answers `Hello version: v1, instance: POD\n`, as Istio's
//! helloworld sample (`SERVICE_VERSION`, which its image sets, and `HOSTNAME`, the pod's
//! name); `GET /health` answers `Helloworld is healthy`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;

use crate::Env;

/// The port the sample listens on.
pub const PORT: u16 = 5000;

/// What helloworld is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloConfig {
    pub version: String,
    pub instance: String,
}

impl HelloConfig {
    /// `SERVICE_VERSION` and `HOSTNAME` (each `None` when unset, as Python prints it).
    pub fn from_env(env: &Env) -> Self {
        Self {
            version: env.get("SERVICE_VERSION").unwrap_or("None").to_string(),
            instance: env.get("HOSTNAME").unwrap_or("None").to_string(),
        }
    }
}

/// The answer to `GET /hello`.
pub fn greeting(config: &HelloConfig) -> String {
    format!(
        "Hello version: {}, instance: {}\n",
        config.version, config.instance
    )
}

/// The helloworld service.
pub fn router(config: HelloConfig) -> axum::Router {
    axum::Router::new()
        .route(
            "/hello",
            get(|State(c): State<Arc<HelloConfig>>| async move { greeting(&c) }),
        )
        .route("/health", get(|| async { "Helloworld is healthy" }))
        .with_state(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get_text, serve};

    #[tokio::test]
    async fn says_hello_with_version_and_instance() {
        let config = HelloConfig::from_env(&Env::from_pairs([
            ("SERVICE_VERSION", "v2"),
            ("HOSTNAME", "helloworld-v2-7d8f9"),
        ]));
        let (base, _stop) = serve(router(config)).await;
        let (status, body) = get_text(&format!("{base}/hello")).await;
        assert_eq!(status, 200);
        assert_eq!(body, "Hello version: v2, instance: helloworld-v2-7d8f9\n");
        let (status, body) = get_text(&format!("{base}/health")).await;
        assert_eq!((status, body.as_str()), (200, "Helloworld is healthy"));
        assert_eq!(get_text(&format!("{base}/")).await.0, 404);
    }
}
