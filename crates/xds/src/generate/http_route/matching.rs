//! Match conditions → Envoy route matches (Istio's `TranslateRouteMatch`).

use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, Route, RouteMatch,
};
use envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::{PathSegment, path_segment};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, OrMatcher, RegexMatcher, StringMatcher, ValueMatcher,
    list_matcher, string_matcher, value_matcher,
};
use envoy_types::pb::google::protobuf::BoolValue;
use isthmus_model::istio::refs::jwt_routing_claim;
use isthmus_model::istio::virtual_service::{HttpMatchRequest, StringMatch};

pub(super) const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
pub(super) const JWT_PAYLOAD: &str = "payload";

pub(super) fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(prefix.to_string())),
        ..Default::default()
    }
}

/// Istio's `TranslateRouteMatch` (VirtualService semantics).
pub(super) fn translate_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let mut out = prefix_match("/");
    let Some(m) = m else {
        return out;
    };
    for (name, sm) in &m.headers {
        match jwt_routing_claim(name) {
            Some(claims) => out.dynamic_metadata.push(jwt_claim_matcher(claims, sm)),
            None => out.headers.push(header_matcher(name, sm)),
        }
    }
    for (name, sm) in &m.without_headers {
        match jwt_routing_claim(name) {
            Some(claims) => {
                let mut mm = jwt_claim_matcher(claims, sm);
                mm.invert = true;
                out.dynamic_metadata.push(mm);
            }
            None => {
                let mut hm = header_matcher(name, sm);
                hm.invert_match = true;
                // treat_missing_header_as_empty conflicts with present_match.
                hm.treat_missing_header_as_empty = !is_presence(sm);
                out.headers.push(hm);
            }
        }
    }
    out.headers.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(uri) = &m.uri {
        match kind(uri) {
            Some(Kind::Exact(p)) => out.path_specifier = Some(PathSpecifier::Path(p.to_string())),
            Some(Kind::Prefix(p)) => {
                out.path_specifier = Some(PathSpecifier::Prefix(p.to_string()));
            }
            Some(Kind::Regex(r)) => {
                out.path_specifier = Some(PathSpecifier::SafeRegex(regex_matcher(r)));
            }
            None => {}
        }
    }
    out.case_sensitive = Some(BoolValue {
        value: !m.ignore_uri_case.unwrap_or(false),
    });
    for (name, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            out.headers.push(header_matcher(name, sm));
        }
    }
    for (name, sm) in &m.query_params {
        let specifier = if is_presence(sm) {
            Some(QueryParameterMatchSpecifier::PresentMatch(true))
        } else {
            string_matcher(sm).map(QueryParameterMatchSpecifier::StringMatch)
        };
        out.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: specifier,
        });
    }
    out
}

/// The condition of a StringMatch (validation allows only one; exact, then prefix, then
/// regex wins otherwise).
pub(super) enum Kind<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

pub(super) fn kind(sm: &StringMatch) -> Option<Kind<'_>> {
    if let Some(e) = &sm.exact {
        Some(Kind::Exact(e))
    } else if let Some(p) = &sm.prefix {
        Some(Kind::Prefix(p))
    } else {
        sm.regex.as_deref().map(Kind::Regex)
    }
}

/// Istio's `canBeConvertedToPresentMatch`: an empty StringMatch, or the regex `*`.
pub(super) fn is_presence(sm: &StringMatch) -> bool {
    matches!(kind(sm), None | Some(Kind::Regex("*")))
}

pub(super) fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        engine_type: None,
    }
}

/// Istio's `ConvertToEnvoyMatch`.
pub(super) fn string_matcher(sm: &StringMatch) -> Option<StringMatcher> {
    let pattern = match kind(sm)? {
        Kind::Exact(e) => string_matcher::MatchPattern::Exact(e.to_string()),
        Kind::Prefix(p) => string_matcher::MatchPattern::Prefix(p.to_string()),
        Kind::Regex(r) => string_matcher::MatchPattern::SafeRegex(regex_matcher(r)),
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

/// Istio's `translateHeaderMatch`: presence for an empty match (or regex `*`), else a
/// string match.
pub(super) fn header_matcher(name: &str, sm: &StringMatch) -> HeaderMatcher {
    let specifier = if is_presence(sm) {
        Some(HeaderMatchSpecifier::PresentMatch(true))
    } else {
        string_matcher(sm).map(HeaderMatchSpecifier::StringMatch)
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: specifier,
        ..Default::default()
    }
}

/// Istio's `MetadataMatcherForJWTClaims` (extended form: the claim is a string, or a list
/// containing a matching string). An empty StringMatch checks the claim's presence.
pub(super) fn jwt_claim_matcher(claims: Vec<&str>, sm: &StringMatch) -> MetadataMatcher {
    let path = std::iter::once(JWT_PAYLOAD)
        .chain(claims)
        .map(|key| PathSegment {
            segment: Some(path_segment::Segment::Key(key.to_string())),
        })
        .collect();
    let value = match string_matcher(sm) {
        Some(string) => {
            let single = ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::StringMatch(string)),
            };
            let list = ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                    ListMatcher {
                        match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(
                            single.clone(),
                        ))),
                    },
                ))),
            };
            ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
                    value_matchers: vec![list, single],
                })),
            }
        }
        None => ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::PresentMatch(true)),
        },
    };
    MetadataMatcher {
        filter: JWT_FILTER.to_string(),
        path,
        value: Some(value),
        invert: false,
    }
}

/// Istio's `IsCatchAllRoute`: prefix `/` (or regex `.*`) and no other condition.
pub(super) fn is_catch_all(r: &Route) -> bool {
    let Some(m) = &r.r#match else {
        return false;
    };
    let catch_all_path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) | Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(r)) => r.regex == ".*",
        _ => false,
    };
    catch_all_path
        && m.headers.is_empty()
        && m.query_parameters.is_empty()
        && m.dynamic_metadata.is_empty()
}
