//! details: `GET /details/ID` answers the book's details; `GET /health`.
//!
//! ```text
//! {"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,
//!  "publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}
//! ```
//!
//! A product id that is not a number answers 400 `{"error":"please provide numeric
//! product id"}`. The real v2 (`ENABLE_EXTERNAL_BOOK_SERVICE=true`) asks Google Books; this
//! one never calls outside the machine and answers the same details.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

/// A book's details, fields in the real service's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BookDetails {
    pub id: i64,
    pub author: String,
    pub year: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub pages: i64,
    pub publisher: String,
    pub language: String,
    #[serde(rename = "ISBN-10")]
    pub isbn_10: String,
    #[serde(rename = "ISBN-13")]
    pub isbn_13: String,
}

/// The details of book `id` (every id has the same).
pub fn book(id: i64) -> BookDetails {
    BookDetails {
        id,
        author: "William Shakespeare".into(),
        year: 1595,
        kind: "paperback".into(),
        pages: 200,
        publisher: "PublisherA".into(),
        language: "English".into(),
        isbn_10: "1234567890".into(),
        isbn_13: "123-1234567890".into(),
    }
}

/// The details service.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/details", get(details_root))
        .route("/details/{*rest}", get(details))
}

async fn health() -> Response {
    Json(serde_json::json!({"status": "Details is healthy"})).into_response()
}

async fn details_root() -> Response {
    bad_id()
}

async fn details(Path(rest): Path<String>) -> Response {
    let last = rest.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
    match last.parse::<i64>() {
        Ok(id) => Json(book(id)).into_response(),
        Err(_) => bad_id(),
    }
}

fn bad_id() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"error": "please provide numeric product id"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get_text, serve};

    #[tokio::test]
    async fn answers_details_and_health() {
        let (base, _stop) = serve(router()).await;
        let (status, body) = get_text(&format!("{base}/details/0")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            r#"{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}"#
        );
        let (status, body) = get_text(&format!("{base}/details/7")).await;
        assert_eq!(status, 200);
        assert!(body.starts_with(r#"{"id":7,"#), "{body}");
        let (status, body) = get_text(&format!("{base}/details/abc")).await;
        assert_eq!(status, 400);
        assert!(body.contains("please provide numeric product id"), "{body}");
        let (status, body) = get_text(&format!("{base}/health")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"status":"Details is healthy"}"#)
        );
        let (status, _) = get_text(&format!("{base}/other")).await;
        assert_eq!(status, 404);
    }
}
