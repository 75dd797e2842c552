//! reviews: `GET /reviews/ID` answers two reviews; `GET /health`.
//!
//! v1 has no ratings. v2 and v3 (`ENABLE_RATINGS=true`) ask ratings
//! (`http://ratings:9080/ratings/ID`, forwarding [`super::REVIEWS_FORWARDED`]) and add
//! `"rating":{"stars":N,"color":"black"|"red"}` (`STAR_COLOR`) to each review, or
//! `"rating":{"error":"Ratings service is currently unavailable"}` when ratings did not
//! answer 200 in time (10 s for black stars, 2.5 s otherwise, as the real one).
//!
//! ```text
//! {"id":"0","podname":"reviews-v2-1","clustername":"cluster1","version":"v2","reviews":[
//!   {"reviewer":"Reviewer1","text":"An extremely entertaining play…","rating":{"stars":5,"color":"black"}},
//!   {"reviewer":"Reviewer2","text":"Absolutely fun and entertaining…","rating":{"stars":4,"color":"black"}}]}
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};

use super::{PORT, REVIEWS_FORWARDED, forwarded, service_url};
use crate::{Env, client};

/// The two reviews every product has.
pub const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

/// What a reviews rating says when ratings could not be had.
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// What the reviews service is told.
#[derive(Clone, Debug)]
pub struct ReviewsConfig {
    /// `SERVICE_VERSION`: `v1`, `v2`, `v3`.
    pub version: String,
    /// `ENABLE_RATINGS`.
    pub ratings_enabled: bool,
    /// `STAR_COLOR`.
    pub star_color: String,
    /// Ratings' base URL, e.g. `http://ratings:9080`.
    pub ratings_url: String,
    /// How long to wait for ratings.
    pub ratings_timeout: Duration,
    /// `HOSTNAME`: the pod's name.
    pub podname: String,
    /// `CLUSTER_NAME`: `"null"` when unknown, as the real one says.
    pub clustername: String,
}

impl ReviewsConfig {
    /// As the real service reads its environment (`ENABLE_RATINGS`, `STAR_COLOR`,
    /// `RATINGS_HOSTNAME`, `SERVICES_DOMAIN`, `RATINGS_SERVICE_PORT`, `HOSTNAME`,
    /// `CLUSTER_NAME`, and `SERVICE_VERSION`, which the image sets).
    pub fn from_env(env: &Env) -> Self {
        let star_color = env.get("STAR_COLOR").unwrap_or("black").to_string();
        let port = env
            .get("RATINGS_SERVICE_PORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or(PORT);
        let ratings_timeout = if star_color == "black" {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(2500)
        };
        Self {
            version: env.get("SERVICE_VERSION").unwrap_or("v1").to_string(),
            ratings_enabled: env
                .get("ENABLE_RATINGS")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            ratings_url: service_url(env, "RATINGS_HOSTNAME", "ratings", port),
            ratings_timeout,
            star_color,
            podname: env.get("HOSTNAME").unwrap_or("null").to_string(),
            clustername: env.get("CLUSTER_NAME").unwrap_or("null").to_string(),
        }
    }
}

#[derive(Serialize)]
struct ReviewsReply<'a> {
    id: String,
    podname: &'a str,
    clustername: &'a str,
    version: &'a str,
    reviews: Vec<Review<'a>>,
}

#[derive(Serialize)]
struct Review<'a> {
    reviewer: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rating: Option<Value>,
}

/// The reviews service.
pub fn router(config: ReviewsConfig) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/reviews/{id}", get(reviews))
        .with_state(Arc::new(config))
}

async fn health() -> Response {
    Json(json!({"status": "Reviews is healthy"})).into_response()
}

/// Each reviewer's stars from ratings, or `None` for each when ratings failed.
async fn stars(config: &ReviewsConfig, id: i64, incoming: &HeaderMap) -> [Option<i64>; 2] {
    let url = format!("{}/ratings/{id}", config.ratings_url);
    let mut headers = forwarded(incoming, REVIEWS_FORWARDED);
    headers.insert(
        axum::http::header::ACCEPT,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let body = match client::get(&url, &headers, config.ratings_timeout).await {
        Ok(r) if r.status == StatusCode::OK => r.json(),
        Ok(r) => {
            tracing::warn!(%url, status = r.status.as_u16(), "ratings answered an error");
            None
        }
        Err(e) => {
            tracing::warn!(%url, error = %e, "cannot reach ratings");
            None
        }
    };
    let ratings = body.as_ref().and_then(|b| b.get("ratings"));
    REVIEWS.map(|(who, _)| ratings.and_then(|r| r.get(who)).and_then(Value::as_i64))
}

async fn reviews(
    State(config): State<Arc<ReviewsConfig>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let stars = if config.ratings_enabled {
        Some(stars(&config, id, &headers).await)
    } else {
        None
    };
    let reviews = REVIEWS
        .iter()
        .enumerate()
        .map(|(i, (reviewer, text))| Review {
            reviewer,
            text,
            rating: stars.map(|s| match s[i] {
                Some(n) => json!({"stars": n, "color": config.star_color}),
                None => json!({"error": RATINGS_UNAVAILABLE}),
            }),
        })
        .collect();
    Json(ReviewsReply {
        id: id.to_string(),
        podname: &config.podname,
        clustername: &config.clustername,
        version: &config.version,
        reviews,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bookinfo::ratings;
    use crate::testing::{
        Recorder, closed_port_url, get_json, get_text, reviews_config as config, serve,
    };

    #[test]
    fn config_from_env_like_the_real_one() {
        let c = ReviewsConfig::from_env(&Env::default());
        assert_eq!(c.ratings_url, "http://ratings:9080");
        assert!(!c.ratings_enabled);
        assert_eq!(
            (c.podname.as_str(), c.clustername.as_str()),
            ("null", "null")
        );
        assert_eq!(c.ratings_timeout, Duration::from_secs(10));
        let c = ReviewsConfig::from_env(&Env::from_pairs([
            ("ENABLE_RATINGS", "TRUE"),
            ("STAR_COLOR", "red"),
            ("RATINGS_SERVICE_PORT", "9081"),
            ("SERVICES_DOMAIN", "bookinfo.svc.cluster.local"),
        ]));
        assert!(c.ratings_enabled);
        assert_eq!(
            c.ratings_url,
            "http://ratings.bookinfo.svc.cluster.local:9081"
        );
        assert_eq!(c.ratings_timeout, Duration::from_millis(2500));
    }

    #[tokio::test]
    async fn v1_has_no_ratings_and_does_not_call_ratings() {
        let rec = Recorder::default();
        let (ratings_base, _s1) = serve(rec.wrap(ratings::router("v1"))).await;
        let (base, _s2) = serve(router(config("v1", &ratings_base))).await;
        let (status, body) = get_text(&format!("{base}/reviews/0")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            concat!(
                r#"{"id":"0","podname":"reviews-v1-1","clustername":"cluster1","version":"v1","reviews":["#,
                r#"{"reviewer":"Reviewer1","text":"An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"},"#,
                r#"{"reviewer":"Reviewer2","text":"Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."}]}"#
            )
        );
        assert_eq!(rec.count(), 0);
    }

    #[tokio::test]
    async fn v2_black_v3_red_stars_and_forwarded_headers() {
        let rec = Recorder::default();
        let (ratings_base, _s1) = serve(rec.wrap(ratings::router("v1"))).await;
        for (version, color) in [("v2", "black"), ("v3", "red")] {
            let (base, _s2) = serve(router(config(version, &ratings_base))).await;
            let (status, body) = get_json(
                &format!("{base}/reviews/0"),
                &[
                    ("x-request-id", "req-1"),
                    ("end-user", "jason"),
                    ("x-not-forwarded", "1"),
                ],
            )
            .await;
            assert_eq!(status, 200);
            assert_eq!(body["version"], version);
            assert_eq!(body["podname"], format!("reviews-{version}-1"));
            assert_eq!(
                body["reviews"][0]["rating"],
                json!({"stars": 5, "color": color})
            );
            assert_eq!(
                body["reviews"][1]["rating"],
                json!({"stars": 4, "color": color})
            );
            let seen = rec.last();
            assert_eq!(seen.path, "/ratings/0");
            assert_eq!(seen.headers["x-request-id"], "req-1");
            assert_eq!(seen.headers["end-user"], "jason");
            assert!(!seen.headers.contains_key("x-not-forwarded"));
        }
    }

    #[tokio::test]
    async fn ratings_down_or_failing_gives_the_error_rating() {
        let failing = axum::Router::new().fallback(|| async { StatusCode::SERVICE_UNAVAILABLE });
        let (failing_base, _s1) = serve(failing).await;
        for ratings_url in [closed_port_url(), failing_base] {
            let (base, _s2) = serve(router(config("v2", &ratings_url))).await;
            let (status, body) = get_json(&format!("{base}/reviews/0"), &[]).await;
            assert_eq!(status, 200);
            for i in 0..2 {
                assert_eq!(
                    body["reviews"][i]["rating"],
                    json!({"error": RATINGS_UNAVAILABLE})
                );
            }
        }
    }

    #[tokio::test]
    async fn health_and_bad_ids() {
        let (base, _s) = serve(router(config("v1", &closed_port_url()))).await;
        let (status, body) = get_text(&format!("{base}/health")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"status":"Reviews is healthy"}"#)
        );
        assert_eq!(get_text(&format!("{base}/reviews/abc")).await.0, 404);
    }
}
