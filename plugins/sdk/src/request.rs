//! Reading an HTTP request the way every route does.

use serde::de::DeserializeOwned;

use crate::reply::fail;
use crate::{Failure, HttpRequest};

impl HttpRequest {
    /// The first value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of `{name}` in the matched route.
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.path_params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `{name}` parsed as an integer id; 400 naming the value otherwise.
    pub fn id_param(&self, name: &str) -> Result<i64, Failure> {
        let raw = self.path_param(name).unwrap_or("");
        raw.parse()
            .map_err(|_| fail(400, format!("bad {name} \"{raw}\" (expected an integer)")))
    }

    /// Query parameter `name` as a number in `range`, `default` when absent;
    /// 400 naming the value otherwise.
    pub fn number(
        &self,
        name: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, Failure> {
        let Some(v) = self.query(name) else {
            return Ok(default);
        };
        v.parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                fail(
                    400,
                    format!(
                        "bad {name} \"{v}\": expected {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            })
    }

    /// Whether the method and the matched route are these.
    pub fn is(&self, method: &str, route: &str) -> bool {
        self.method.eq_ignore_ascii_case(method) && self.route == route
    }

    /// The body as JSON of type `T`; an empty body is `None`; malformed is 400.
    pub fn json<T: DeserializeOwned>(&self) -> Result<Option<T>, Failure> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|e| fail(400, format!("malformed JSON body: {e}")))
    }

    /// The media type without parameters, lowercase; empty when absent.
    pub fn media_type(&self) -> String {
        self.header("content-type")
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    }

    /// Whether the client asked for HTML.
    pub fn wants_html(&self) -> bool {
        self.header("accept")
            .is_some_and(|v| v.contains("text/html"))
    }
}
