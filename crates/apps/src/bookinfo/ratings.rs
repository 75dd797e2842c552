//! ratings: `GET /ratings/ID` answers `{"id":ID,"ratings":{"Reviewer1":5,"Reviewer2":4}}`;
//! `POST /ratings/ID` with a JSON object replaces the ratings of that product (v1 only,
//! as the real one keeps them in memory; v2 answers 501); `GET /health`.
//!
//! The real v2 reads its ratings from MongoDB or MySQL; this one answers the same two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use isthmus_model::sync::lock;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::product_id;

struct Ratings {
    /// `SERVICE_VERSION`: `v2` is the database-backed one, which cannot be posted to.
    version: String,
    posted: Mutex<HashMap<i64, Value>>,
}

/// The ratings of product `id` as the service answers them when nothing was posted.
pub fn default_ratings(id: i64) -> Value {
    json!({"id": id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
}

/// The ratings service of `version` (`SERVICE_VERSION`, `v1` or `v2`).
pub fn router(version: &str) -> axum::Router {
    let state = Arc::new(Ratings {
        version: version.to_string(),
        posted: Mutex::new(HashMap::new()),
    });
    axum::Router::new()
        .route("/health", get(health))
        .route("/ratings/{*rest}", get(ratings).post(post_ratings))
        .with_state(state)
}

async fn health() -> Response {
    Json(json!({"status": "Ratings is healthy"})).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn id_of(rest: &str) -> Option<i64> {
    product_id(rest.rsplit('/').next().unwrap_or(""))
}

async fn ratings(State(app): State<Arc<Ratings>>, Path(rest): Path<String>) -> Response {
    let Some(id) = id_of(&rest) else {
        return error(StatusCode::BAD_REQUEST, "please provide numeric product ID");
    };
    let posted = lock(&app.posted).get(&id).cloned();
    Json(posted.unwrap_or_else(|| default_ratings(id))).into_response()
}

async fn post_ratings(
    State(app): State<Arc<Ratings>>,
    Path(rest): Path<String>,
    body: Bytes,
) -> Response {
    let Some(id) = id_of(&rest) else {
        return error(StatusCode::BAD_REQUEST, "please provide numeric product ID");
    };
    let Ok(ratings) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "please provide valid ratings JSON");
    };
    if app.version == "v2" {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "Post not implemented for database backed ratings",
        );
    }
    let entry = json!({"id": id, "ratings": ratings});
    lock(&app.posted).insert(id, entry.clone());
    Json(entry).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get_text, post, serve};

    #[tokio::test]
    async fn answers_ratings_and_takes_posts() {
        let (base, _stop) = serve(router("v1")).await;
        let (status, body) = get_text(&format!("{base}/ratings/0")).await;
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}"#);
        let (status, body) = get_text(&format!("{base}/ratings/x")).await;
        assert_eq!(status, 400);
        assert!(body.contains("please provide numeric product ID"), "{body}");
        let (status, body) = get_text(&format!("{base}/health")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"status":"Ratings is healthy"}"#)
        );

        let reply = post(
            &format!("{base}/ratings/3"),
            "application/json",
            r#"{"Reviewer1":1,"Reviewer2":2}"#,
            &[],
        )
        .await;
        assert_eq!(reply.status, 200);
        let (_, body) = get_text(&format!("{base}/ratings/3")).await;
        assert_eq!(body, r#"{"id":3,"ratings":{"Reviewer1":1,"Reviewer2":2}}"#);

        let (base, _stop2) = serve(router("v2")).await;
        let reply = post(&format!("{base}/ratings/3"), "application/json", "{}", &[]).await;
        assert_eq!(reply.status, 501);
    }
}
