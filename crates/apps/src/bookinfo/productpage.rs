//! productpage: the Bookinfo page and its JSON API.
//!
//! - `GET /`, `GET /index.html`: the index (the services table, links to the page);
//! - `GET /productpage`: the HTML page of product 0 with its details (from details) and
//!   reviews (from reviews, whose ratings render as `<font color="black|red">` stars);
//! - `POST /login` (form `username`, `passwd`; no password check, as the sample) sets the
//!   `session` cookie and redirects back (`Referer`, else `/productpage`); `GET /logout`
//!   clears it;
//! - `GET /api/v1/products`, `/api/v1/products/ID`, `/api/v1/products/ID/reviews`,
//!   `/api/v1/products/ID/ratings`; `GET /health`.
//!
//! Calls to details, reviews and ratings carry [`super::PRODUCTPAGE_FORWARDED`] from the
//! request and `end-user: USER` when signed in; each waits 3 s, and reviews is tried a
//! second time when the first attempt fails (the sample's deliberate "bug" that Istio's
//! fault-injection task relies on: 3 s + 3 s). An upstream's failure gives the sample's
//! texts, "Sorry, product details are currently unavailable for this book." and
//! "Sorry, product reviews are currently unavailable for this book.".
//!
//! Unlike the sample, an `end-user` header on the request is forwarded too when nobody is
//! signed in (so `curl -H 'end-user: jason'` works like signing in as jason).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{PORT, PRODUCTPAGE_FORWARDED, forwarded, service_url};
use crate::{Env, client};

/// What productpage says when details fails.
pub const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
/// What productpage says when reviews fails.
pub const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
/// What productpage says when ratings fails (only on `/api/v1/products/ID/ratings`).
pub const RATINGS_UNAVAILABLE: &str =
    "Sorry, product ratings are currently unavailable for this book.";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "session";

/// What productpage is told.
#[derive(Clone, Debug)]
pub struct ProductPageConfig {
    /// Base URLs, e.g. `http://details:9080`.
    pub details_url: String,
    pub reviews_url: String,
    pub ratings_url: String,
    /// How long each call waits.
    pub timeout: Duration,
    /// How many times reviews is tried (the sample: 2).
    pub reviews_attempts: u32,
}

impl ProductPageConfig {
    /// As the real one reads its environment: `DETAILS_HOSTNAME`, `REVIEWS_HOSTNAME`,
    /// `RATINGS_HOSTNAME` (default `details`, `reviews`, `ratings`), `SERVICES_DOMAIN`
    /// (default none), port 9080.
    pub fn from_env(env: &Env) -> Self {
        Self {
            details_url: service_url(env, "DETAILS_HOSTNAME", "details", PORT),
            reviews_url: service_url(env, "REVIEWS_HOSTNAME", "reviews", PORT),
            ratings_url: service_url(env, "RATINGS_HOSTNAME", "ratings", PORT),
            timeout: Duration::from_secs(3),
            reviews_attempts: 2,
        }
    }
}

/// The productpage service.
pub fn router(config: ProductPageConfig) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/health", get(health))
        .route("/login", post(login))
        .route("/logout", get(logout))
        .route("/productpage", get(front))
        .route("/api/v1/products", get(products))
        .route("/api/v1/products/{id}", get(product_details))
        .route("/api/v1/products/{id}/reviews", get(product_reviews))
        .route("/api/v1/products/{id}/ratings", get(product_ratings))
        .with_state(Arc::new(config))
}

type App = State<Arc<ProductPageConfig>>;

/// The one product.
pub fn products_json() -> Value {
    json!([{
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play."
    }])
}

// ---- session ----------------------------------------------------------------------

/// The `session` cookie's value for `user`: hex of `{"user":USER}` (opaque, unsigned:
/// the sample does no real authentication either).
pub fn session_value(user: &str) -> String {
    json!({ "user": user })
        .to_string()
        .bytes()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn decode_session(value: &str) -> Option<String> {
    if !value.len().is_multiple_of(2) || !value.is_ascii() {
        return None;
    }
    let bytes = (0..value.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&value[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("user")?
        .as_str()
        .filter(|u| !u.is_empty())
        .map(str::to_string)
}

/// The signed-in user, from the request's `session` cookie.
pub fn session_user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == SESSION_COOKIE)
        .find_map(|(_, v)| decode_session(v.trim_matches('"')))
}

/// What goes to details, reviews and ratings with a request that came with `incoming`.
pub fn outgoing_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = forwarded(incoming, PRODUCTPAGE_FORWARDED);
    if let Some(user) = session_user(incoming)
        && let Ok(v) = HeaderValue::from_str(&user)
    {
        out.insert("end-user", v);
    }
    out
}

// ---- upstream calls ---------------------------------------------------------------

/// An upstream's answer as productpage keeps it: status and JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Fetched {
    pub status: u16,
    pub body: Value,
}

async fn fetch(
    config: &ProductPageConfig,
    base: &str,
    what: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<Value, u16> {
    let url = format!("{base}/{what}/{id}");
    match client::get(&url, headers, config.timeout).await {
        Ok(r) if r.status == StatusCode::OK => r.json().ok_or_else(|| {
            tracing::warn!(%url, "answer is not JSON");
            500
        }),
        Ok(r) => {
            tracing::warn!(%url, status = r.status.as_u16(), "upstream answered an error");
            Err(r.status.as_u16())
        }
        Err(e) => {
            tracing::warn!(%url, error = %e, "cannot reach upstream");
            Err(500)
        }
    }
}

fn fetched(result: Result<Value, u16>, error: &str) -> Fetched {
    match result {
        Ok(body) => Fetched { status: 200, body },
        Err(status) => Fetched {
            status,
            body: json!({ "error": error }),
        },
    }
}

async fn details_of(config: &ProductPageConfig, id: &str, headers: &HeaderMap) -> Fetched {
    let r = fetch(config, &config.details_url, "details", id, headers).await;
    fetched(r, DETAILS_UNAVAILABLE)
}

async fn reviews_of(config: &ProductPageConfig, id: &str, headers: &HeaderMap) -> Fetched {
    let mut last = Err(500);
    for _ in 0..config.reviews_attempts.max(1) {
        last = fetch(config, &config.reviews_url, "reviews", id, headers).await;
        if last.is_ok() {
            break;
        }
    }
    fetched(last, REVIEWS_UNAVAILABLE)
}

async fn ratings_of(config: &ProductPageConfig, id: &str, headers: &HeaderMap) -> Fetched {
    let r = fetch(config, &config.ratings_url, "ratings", id, headers).await;
    fetched(r, RATINGS_UNAVAILABLE)
}

// ---- handlers ---------------------------------------------------------------------

async fn health() -> &'static str {
    "Product page is healthy"
}

async fn index(State(config): App) -> Html<String> {
    Html(render_index(&config))
}

async fn front(State(config): App, headers: HeaderMap) -> Html<String> {
    let out = outgoing_headers(&headers);
    let details = details_of(&config, "0", &out).await;
    let reviews = reviews_of(&config, "0", &out).await;
    let user = session_user(&headers);
    Html(render_product_page(user.as_deref(), &details, &reviews))
}

fn json_reply(f: Fetched) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        f.body.to_string(),
    )
        .into_response()
}

async fn products() -> Response {
    json_reply(Fetched {
        status: 200,
        body: products_json(),
    })
}

async fn product_details(State(config): App, Path(id): Path<String>, h: HeaderMap) -> Response {
    json_reply(details_of(&config, &id, &outgoing_headers(&h)).await)
}

async fn product_reviews(State(config): App, Path(id): Path<String>, h: HeaderMap) -> Response {
    json_reply(reviews_of(&config, &id, &outgoing_headers(&h)).await)
}

async fn product_ratings(State(config): App, Path(id): Path<String>, h: HeaderMap) -> Response {
    json_reply(ratings_of(&config, &id, &outgoing_headers(&h)).await)
}

/// Where to send the browser back to: the page it came from, else the product page.
fn back(headers: &HeaderMap) -> String {
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty())
        .unwrap_or("/productpage")
        .to_string()
}

fn redirect(to: &str, cookie: String) -> Response {
    let mut res = (StatusCode::FOUND, Html(format!(
        "<!doctype html>\n<title>Redirecting...</title>\n<h1>Redirecting...</h1>\n<p>You should be redirected automatically to the target URL: <a href=\"{0}\">{0}</a>. If not, click the link.\n",
        escape(to)
    )))
        .into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/")
}

async fn login(headers: HeaderMap, RawQuery(query): RawQuery, body: Bytes) -> Response {
    // Flask's request.values: the form first, then the query string.
    let user = form_urlencoded::parse(&body)
        .chain(form_urlencoded::parse(query.unwrap_or_default().as_bytes()))
        .find(|(k, _)| k == "username")
        .map(|(_, v)| v.into_owned())
        .filter(|u| !u.is_empty());
    let cookie = match &user {
        Some(u) => format!("{SESSION_COOKIE}={}; HttpOnly; Path=/", session_value(u)),
        None => clear_cookie(),
    };
    tracing::debug!(user = user.as_deref().unwrap_or(""), "login");
    redirect(&back(&headers), cookie)
}

async fn logout(headers: HeaderMap) -> Response {
    redirect(&back(&headers), clear_cookie())
}

// ---- HTML -------------------------------------------------------------------------

/// HTML-escapes text (as Jinja's autoescape does).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as the template prints it: strings bare, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Null => String::new(),
        other => escape(&other.to_string()),
    }
}

/// A JSON value as an HTML table, as json2html renders it for the index.
fn json_table(v: &Value, attrs: &str) -> String {
    match v {
        Value::Object(map) => {
            let mut out = format!("<table{attrs}>");
            for (k, v) in map {
                let _ = write!(
                    out,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape(k),
                    json_table(v, attrs)
                );
            }
            out.push_str("</table>");
            out
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            let keys: Vec<&String> = items[0]
                .as_object()
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            let mut out = format!("<table{attrs}><thead><tr>");
            for k in &keys {
                let _ = write!(out, "<th>{}</th>", escape(k));
            }
            out.push_str("</tr></thead><tbody>");
            for item in items {
                out.push_str("<tr>");
                for k in &keys {
                    let _ = write!(
                        out,
                        "<td>{}</td>",
                        json_table(item.get(k.as_str()).unwrap_or(&Value::Null), attrs)
                    );
                }
                out.push_str("</tr>");
            }
            out.push_str("</tbody></table>");
            out
        }
        Value::Array(items) => {
            let mut out = String::from("<ul>");
            for item in items {
                let _ = write!(out, "<li>{}</li>", json_table(item, attrs));
            }
            out.push_str("</ul>");
            out
        }
        other => text(other),
    }
}

fn service_dict(config: &ProductPageConfig) -> Value {
    let details = json!({"name": config.details_url, "endpoint": "details", "children": []});
    let ratings = json!({"name": config.ratings_url, "endpoint": "ratings", "children": []});
    let reviews = json!({"name": config.reviews_url, "endpoint": "reviews", "children": [ratings]});
    // The sample names productpage by details' address too.
    json!({"name": config.details_url, "endpoint": "details", "children": [details, reviews]})
}

const HEAD: &str = "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n<title>Simple Bookstore App</title>\n</head>\n<body>\n";

/// The index page.
pub fn render_index(config: &ProductPageConfig) -> String {
    let table = json_table(
        &service_dict(config),
        " class=\"table table-condensed table-bordered table-hover\"",
    );
    format!(
        "{HEAD}<p><h3>Hello! This is a simple bookstore application consisting of three services as shown below</h3></p>\n{table}\n<p><h4>Click on one of the links below to auto generate a request to the backend as a real user or a tester\n</h4></p>\n<p><a href=\"/productpage?u=normal\">Normal user</a></p>\n<p><a href=\"/productpage?u=test\">Test user</a></p>\n</body>\n</html>\n"
    )
}

fn render_nav(out: &mut String, user: Option<&str>) {
    out.push_str("<nav class=\"navbar navbar-inverse navbar-static-top\">\n<div class=\"container\">\n<div class=\"navbar-header\"><a class=\"navbar-brand\" href=\"#\">BookInfo Sample</a></div>\n");
    match user {
        Some(user) => {
            let _ = write!(
                out,
                "<p class=\"navbar-text navbar-right\">\n<i class=\"glyphicon glyphicon-user\" aria-hidden=\"true\"></i>\n<span style=\"padding-left: 5px;\" id=\"user\">{}</span> ( <a href=\"logout\">Sign out</a> )\n</p>\n",
                escape(user)
            );
        }
        None => out.push_str(concat!(
            "<button type=\"button\" id=\"sign-in-button\" class=\"btn btn-default navbar-btn navbar-right\">Sign in</button>\n",
            "<dialog id=\"login-modal\">\n<h4 class=\"modal-title\">Please sign in</h4>\n",
            "<form method=\"post\" action='login' name=\"login_form\">\n",
            "<p><input type=\"text\" class=\"form-control\" name=\"username\" id=\"username\" placeholder=\"User Name\"></p>\n",
            "<p><input type=\"password\" class=\"form-control\" name=\"passwd\" placeholder=\"Password\"></p>\n",
            "<p><button type=\"submit\" class=\"btn btn-primary\">Sign in</button></p>\n",
            "</form>\n</dialog>\n",
        )),
    }
    out.push_str("</div>\n</nav>\n");
}

fn render_details(out: &mut String, details: &Fetched) {
    if details.status == 200 {
        let d = &details.body;
        out.push_str("<h4 class=\"text-center text-primary\">Book Details</h4>\n<dl>\n");
        for (label, key) in [
            ("Type", "type"),
            ("Pages", "pages"),
            ("Publisher", "publisher"),
            ("Language", "language"),
            ("ISBN-10", "ISBN-10"),
            ("ISBN-13", "ISBN-13"),
        ] {
            let _ = writeln!(out, "<dt>{label}:</dt>{}", text(&d[key]));
        }
        out.push_str("</dl>\n");
    } else {
        out.push_str(
            "<h4 class=\"text-center text-primary\">Error fetching product details!</h4>\n",
        );
        let _ = writeln!(out, "<p>{}</p>", text(&details.body["error"]));
    }
}

fn render_rating(out: &mut String, rating: &Value) {
    let stars = rating["stars"].as_i64().unwrap_or(0).clamp(0, 5);
    if stars > 0 {
        let _ = writeln!(out, "<font color=\"{}\">", text(&rating["color"]));
        out.push_str("<!-- full stars: -->\n");
        for _ in 0..stars {
            out.push_str("<span class=\"glyphicon glyphicon-star\"></span>\n");
        }
        out.push_str("<!-- empty stars: -->\n");
        for _ in stars..5 {
            out.push_str("<span class=\"glyphicon glyphicon-star-empty\"></span>\n");
        }
        out.push_str("</font>\n");
    } else if let Some(error) = rating.get("error").filter(|e| !e.is_null()) {
        let _ = writeln!(out, "<p><i>{}</i></p>", text(error));
    }
}

fn render_reviews(out: &mut String, reviews: &Fetched) {
    if reviews.status != 200 {
        out.push_str(
            "<h4 class=\"text-center text-primary\">Error fetching product reviews!</h4>\n",
        );
        let _ = writeln!(out, "<p>{}</p>", text(&reviews.body["error"]));
        return;
    }
    let r = &reviews.body;
    out.push_str("<h4 class=\"text-center text-primary\">Book Reviews</h4>\n");
    for review in r["reviews"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "<blockquote>\n<p>{}</p>\n<small>{}</small>\n",
            text(&review["text"]),
            text(&review["reviewer"])
        );
        if let Some(rating) = review.get("rating").filter(|r| r.is_object()) {
            render_rating(out, rating);
        }
        out.push_str("</blockquote>\n");
    }
    let _ = write!(
        out,
        "<p class=\"served-by\">Reviews served by: {}",
        text(&r["podname"])
    );
    match r.get("clustername").and_then(Value::as_str) {
        Some(c) if c != "null" && !c.is_empty() => {
            let _ = write!(out, " on cluster {}", escape(c));
        }
        _ => {}
    }
    out.push_str("</p>\n");
}

/// The product page for `user` (`None`: nobody signed in) with what details and reviews
/// answered.
pub fn render_product_page(user: Option<&str>, details: &Fetched, reviews: &Fetched) -> String {
    let products = products_json();
    let product = &products[0];
    let mut out = String::from(HEAD);
    render_nav(&mut out, user);
    let _ = write!(
        out,
        "<div class=\"container-fluid\">\n<div class=\"row\">\n<div class=\"col-md-12\">\n<h3 class=\"text-center text-primary\">{}</h3>\n<p>Summary: {}</p>\n</div>\n</div>\n<div class=\"row\">\n<div class=\"col-md-6\">\n",
        text(&product["title"]),
        product["descriptionHtml"].as_str().unwrap_or_default()
    );
    render_details(&mut out, details);
    out.push_str("</div>\n<div class=\"col-md-6\">\n");
    render_reviews(&mut out, reviews);
    out.push_str("</div>\n</div>\n</div>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bookinfo::{details, ratings, reviews};
    use crate::testing::{
        Recorder, closed_port_url, get, get_json, get_text, post, reviews_config, serve,
    };

    type Stop = tokio::sync::oneshot::Sender<()>;

    /// productpage, details, reviews `version` and ratings, each recording what it got.
    struct Bookinfo {
        productpage: String,
        details: Recorder,
        reviews: Recorder,
        ratings: Recorder,
        _stop: Vec<Stop>,
    }

    impl Bookinfo {
        async fn start(version: &str) -> Self {
            let (details_r, reviews_r, ratings_r) = (
                Recorder::default(),
                Recorder::default(),
                Recorder::default(),
            );
            let (ratings_url, s1) = serve(ratings_r.wrap(ratings::router("v1"))).await;
            let (details_url, s2) = serve(details_r.wrap(details::router())).await;
            let (reviews_url, s3) =
                serve(reviews_r.wrap(reviews::router(reviews_config(version, &ratings_url)))).await;
            let (productpage, s4) = serve(router(ProductPageConfig {
                details_url,
                reviews_url,
                ratings_url,
                ..ProductPageConfig::from_env(&Env::default())
            }))
            .await;
            Bookinfo {
                productpage,
                details: details_r,
                reviews: reviews_r,
                ratings: ratings_r,
                _stop: vec![s1, s2, s3, s4],
            }
        }

        async fn page(&self, headers: &[(&str, &str)]) -> String {
            let r = get(&format!("{}/productpage", self.productpage), headers).await;
            assert_eq!(r.status, 200);
            r.text()
        }
    }

    fn page_with(details_url: String, reviews_url: String) -> ProductPageConfig {
        ProductPageConfig {
            details_url,
            reviews_url,
            ratings_url: closed_port_url(),
            timeout: Duration::from_secs(3),
            reviews_attempts: 2,
        }
    }

    #[test]
    fn config_from_env_like_the_real_one() {
        let c = ProductPageConfig::from_env(&Env::default());
        assert_eq!(
            (
                c.details_url.as_str(),
                c.reviews_url.as_str(),
                c.ratings_url.as_str()
            ),
            (
                "http://details:9080",
                "http://reviews:9080",
                "http://ratings:9080"
            )
        );
        assert_eq!((c.timeout, c.reviews_attempts), (Duration::from_secs(3), 2));
        let c = ProductPageConfig::from_env(&Env::from_pairs([
            ("SERVICES_DOMAIN", "default.svc.cluster.local"),
            ("DETAILS_HOSTNAME", "details-v2"),
        ]));
        assert_eq!(
            c.details_url,
            "http://details-v2.default.svc.cluster.local:9080"
        );
        assert_eq!(
            c.reviews_url,
            "http://reviews.default.svc.cluster.local:9080"
        );
    }

    #[tokio::test]
    async fn page_with_black_stars_from_reviews_v2() {
        let b = Bookinfo::start("v2").await;
        let page = b.page(&[]).await;
        assert!(
            page.contains("<title>Simple Bookstore App</title>"),
            "{page}"
        );
        assert!(page.contains("The Comedy of Errors"), "{page}");
        assert!(page.contains("<h4 class=\"text-center text-primary\">Book Details</h4>"));
        assert!(page.contains("<dt>Type:</dt>paperback\n"), "{page}");
        assert!(page.contains("<dt>Pages:</dt>200\n"), "{page}");
        assert!(page.contains("<dt>ISBN-13:</dt>123-1234567890\n"), "{page}");
        assert!(page.contains(reviews::REVIEWS[0].1), "{page}");
        assert!(page.contains("<small>Reviewer2</small>"), "{page}");
        assert_eq!(page.matches("<font color=\"black\">").count(), 2, "{page}");
        assert!(!page.contains("<font color=\"red\">"));
        assert_eq!(
            page.matches("<span class=\"glyphicon glyphicon-star\"></span>")
                .count(),
            9
        );
        assert_eq!(
            page.matches("<span class=\"glyphicon glyphicon-star-empty\"></span>")
                .count(),
            1
        );
        assert!(
            page.contains("Reviews served by: reviews-v2-1 on cluster cluster1</p>"),
            "{page}"
        );
        assert!(page.contains("Sign in"), "{page}");
        assert!(!page.contains("Sign out"));
        assert_eq!(
            (b.details.count(), b.reviews.count(), b.ratings.count()),
            (1, 1, 1)
        );
        assert_eq!(b.details.last().path, "/details/0");
        assert_eq!(b.reviews.last().path, "/reviews/0");
    }

    #[tokio::test]
    async fn page_with_red_stars_from_reviews_v3_and_none_from_v1() {
        let b = Bookinfo::start("v3").await;
        let page = b.page(&[]).await;
        assert_eq!(page.matches("<font color=\"red\">").count(), 2, "{page}");
        assert!(!page.contains("<font color=\"black\">"));
        assert!(page.contains("Reviews served by: reviews-v3-1"), "{page}");

        let b = Bookinfo::start("v1").await;
        let page = b.page(&[]).await;
        assert!(!page.contains("<font"), "{page}");
        assert!(!page.contains("glyphicon-star"), "{page}");
        assert!(page.contains(reviews::REVIEWS[1].1), "{page}");
        assert!(page.contains("Reviews served by: reviews-v1-1"), "{page}");
        assert_eq!(b.ratings.count(), 0);
    }

    #[tokio::test]
    async fn upstreams_down_give_the_samples_error_texts() {
        // ratings down: reviews v2 says so for each review.
        let (reviews_url, _s1) =
            serve(reviews::router(reviews_config("v2", &closed_port_url()))).await;
        let (details_url, _s2) = serve(details::router()).await;
        let (base, _s3) = serve(router(page_with(details_url, reviews_url))).await;
        let (status, page) = get_text(&format!("{base}/productpage")).await;
        assert_eq!(status, 200);
        assert_eq!(
            page.matches("<p><i>Ratings service is currently unavailable</i></p>")
                .count(),
            2,
            "{page}"
        );
        assert!(!page.contains("<font"), "{page}");

        // details and reviews down; reviews is tried twice.
        let failing = Recorder::default();
        let (failing_url, _s4) = serve(
            failing
                .wrap(axum::Router::new().fallback(|| async { StatusCode::SERVICE_UNAVAILABLE })),
        )
        .await;
        let (base, _s5) = serve(router(page_with(closed_port_url(), failing_url))).await;
        let (status, page) = get_text(&format!("{base}/productpage")).await;
        assert_eq!(status, 200);
        assert!(page.contains("Error fetching product details!"), "{page}");
        assert!(
            page.contains(&format!("<p>{DETAILS_UNAVAILABLE}</p>")),
            "{page}"
        );
        assert!(page.contains("Error fetching product reviews!"), "{page}");
        assert!(
            page.contains(&format!("<p>{REVIEWS_UNAVAILABLE}</p>")),
            "{page}"
        );
        assert_eq!(failing.count(), 2);

        // The API passes the upstream's status on.
        let r = get(&format!("{base}/api/v1/products/0/reviews"), &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json().unwrap(), json!({"error": REVIEWS_UNAVAILABLE}));
        let r = get(&format!("{base}/api/v1/products/0"), &[]).await;
        assert_eq!(r.status, 500);
        assert_eq!(r.json().unwrap(), json!({"error": DETAILS_UNAVAILABLE}));
        let r = get(&format!("{base}/api/v1/products/0/ratings"), &[]).await;
        assert_eq!(r.status, 500);
        assert_eq!(r.json().unwrap(), json!({"error": RATINGS_UNAVAILABLE}));
    }

    #[tokio::test]
    async fn propagates_tracing_headers_and_end_user_down_to_ratings() {
        let b = Bookinfo::start("v2").await;
        let cookie = format!("{SESSION_COOKIE}={}", session_value("jason"));
        b.page(&[
            ("x-request-id", "req-42"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-sampled", "1"),
            (
                "traceparent",
                "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
            ),
            ("cookie", &cookie),
            ("x-not-forwarded", "1"),
        ])
        .await;
        for (who, rec) in [
            ("details", &b.details),
            ("reviews", &b.reviews),
            ("ratings", &b.ratings),
        ] {
            let seen = rec.last();
            assert_eq!(seen.headers["x-request-id"], "req-42", "{who}");
            assert_eq!(
                seen.headers["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7",
                "{who}"
            );
            assert_eq!(seen.headers["x-b3-sampled"], "1", "{who}");
            assert!(seen.headers.contains_key("traceparent"), "{who}");
            assert_eq!(seen.headers["end-user"], "jason", "{who}");
            assert!(!seen.headers.contains_key("x-not-forwarded"), "{who}");
        }

        // Nobody signed in: an end-user header on the request goes on as it is.
        b.page(&[("x-request-id", "req-43"), ("end-user", "jason")])
            .await;
        for rec in [&b.details, &b.reviews, &b.ratings] {
            let seen = rec.last();
            assert_eq!(seen.headers["x-request-id"], "req-43");
            assert_eq!(seen.headers["end-user"], "jason");
        }
        // Signed in, the session's user wins.
        let cookie = format!("{SESSION_COOKIE}={}", session_value("alice"));
        b.page(&[("end-user", "jason"), ("cookie", &cookie)]).await;
        assert_eq!(b.ratings.last().headers["end-user"], "alice");
        // Neither: no end-user.
        b.page(&[]).await;
        assert!(!b.reviews.last().headers.contains_key("end-user"));
        assert!(!b.ratings.last().headers.contains_key("end-user"));
    }

    #[tokio::test]
    async fn login_and_logout() {
        let b = Bookinfo::start("v2").await;
        let base = &b.productpage;
        let r = post(
            &format!("{base}/login"),
            "application/x-www-form-urlencoded",
            "username=jason&passwd=secret",
            &[],
        )
        .await;
        assert_eq!(r.status, 302);
        assert_eq!(r.headers["location"], "/productpage");
        let set = r.headers["set-cookie"].to_str().unwrap().to_string();
        assert!(set.starts_with("session="), "{set}");
        assert!(!set.contains("jason"), "opaque: {set}");
        let cookie = set.split(';').next().unwrap().to_string();

        let page = b.page(&[("cookie", &cookie)]).await;
        assert!(
            page.contains("<span style=\"padding-left: 5px;\" id=\"user\">jason</span>"),
            "{page}"
        );
        assert!(page.contains("<a href=\"logout\">Sign out</a>"), "{page}");
        assert!(!page.contains("Sign in"), "{page}");
        assert_eq!(b.reviews.last().headers["end-user"], "jason");

        let r = get(
            &format!("{base}/logout"),
            &[
                ("cookie", &cookie),
                ("referer", "http://bookinfo/productpage?u=test"),
            ],
        )
        .await;
        assert_eq!(r.status, 302);
        assert_eq!(r.headers["location"], "http://bookinfo/productpage?u=test");
        let cleared = r.headers["set-cookie"].to_str().unwrap();
        assert!(cleared.starts_with("session=;"), "{cleared}");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");

        // A user name is text, never markup.
        let r = post(
            &format!("{base}/login"),
            "application/x-www-form-urlencoded",
            "username=%3Cb%3Ex%3C%2Fb%3E",
            &[("referer", "/productpage")],
        )
        .await;
        let cookie = r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let page = b.page(&[("cookie", &cookie)]).await;
        assert!(
            page.contains("id=\"user\">&lt;b&gt;x&lt;/b&gt;</span>"),
            "{page}"
        );
    }

    #[test]
    fn sessions_round_trip_and_junk_is_nobody() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; session={}; b=2", session_value("jason")))
                .unwrap(),
        );
        assert_eq!(session_user(&h).as_deref(), Some("jason"));
        for junk in ["session=zz", "session=", "session=7b7d", "other=1"] {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_static(junk));
            assert_eq!(session_user(&h), None, "{junk}");
        }
    }

    #[tokio::test]
    async fn index_api_and_health() {
        let b = Bookinfo::start("v1").await;
        let base = &b.productpage;
        let (status, index) = get_text(&format!("{base}/")).await;
        assert_eq!(status, 200);
        assert!(
            index.contains("<title>Simple Bookstore App</title>"),
            "{index}"
        );
        assert!(index.contains("simple bookstore application"), "{index}");
        assert!(index.contains("<a href=\"/productpage?u=normal\">Normal user</a>"));
        assert_eq!(get_text(&format!("{base}/index.html")).await.1, index);
        let (status, health) = get_text(&format!("{base}/health")).await;
        assert_eq!((status, health.as_str()), (200, "Product page is healthy"));

        let (status, products) = get_json(&format!("{base}/api/v1/products"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(products[0]["title"], "The Comedy of Errors");
        let (status, d) = get_json(&format!("{base}/api/v1/products/0"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(d["publisher"], "PublisherA");
        let (status, r) = get_json(&format!("{base}/api/v1/products/0/reviews"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(r["podname"], "reviews-v1-1");
        let (status, r) = get_json(&format!("{base}/api/v1/products/0/ratings"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(r["ratings"]["Reviewer1"], 5);
    }
}
