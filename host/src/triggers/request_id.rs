//! Every HTTP answer carries the request's id (`X-Request-Id`), whatever
//! answered it: a plugin, a host route, a refusal, the 404 and 405
//! fallbacks, the whole-request deadline's 503. A request that brought no
//! usable id is given one, in its headers, so every handler after this
//! layer (and the plugin, and the host's log) names the same one.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Built once: a name given as a string is copied on every insert.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the client's own when it is usable (1 to 64 letters,
/// digits and dashes, so it can go into a log line and a header as it is),
/// else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    client_id(headers)
        .map(str::to_string)
        .unwrap_or_else(super::new_request_id)
}

fn client_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Wraps a service so every answer carries its request's id.
#[derive(Clone)]
pub struct RequestIds<S> {
    inner: S,
}

impl<S> RequestIds<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> tower::Service<Request<B>> for RequestIds<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = StampedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match client_id(request.headers()) {
            Some(_) => request.headers()[X_REQUEST_ID].clone(),
            None => {
                let id = HeaderValue::from_maybe_shared(Bytes::from(super::new_request_id()))
                    .expect("a uuid's hex digits make a header value");
                // Replaces an unusable one: the handlers read this one.
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        StampedFuture {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

pin_project! {
    /// An answer, with the request's id put on it.
    pub struct StampedFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for StampedFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    /// The id a handler sees is the one the answer carries: the client's
    /// when usable, else one made for it (replacing an unusable one).
    #[tokio::test]
    async fn the_answer_carries_the_id_the_handler_saw() {
        let router = axum::Router::new().route(
            "/",
            get(|headers: HeaderMap| async move { request_id(&headers) }),
        );
        let service = RequestIds::new(router);
        let ask = |path: &str, id: Option<&str>| {
            let mut request = Request::get(path);
            if let Some(id) = id {
                request = request.header("x-request-id", id);
            }
            service
                .clone()
                .oneshot(request.body(Body::empty()).unwrap())
        };
        let seen = |response: Response| async move {
            let header = response.headers()[X_REQUEST_ID]
                .to_str()
                .unwrap()
                .to_owned();
            let body = axum::body::to_bytes(response.into_body(), 1 << 10)
                .await
                .unwrap();
            (header, String::from_utf8(body.to_vec()).unwrap())
        };

        let (header, handler) = seen(ask("/", Some("abc-123")).await.unwrap()).await;
        assert_eq!((header.as_str(), handler.as_str()), ("abc-123", "abc-123"));

        for unusable in [None, Some("has space"), Some(&*"x".repeat(65))] {
            let (header, handler) = seen(ask("/", unusable).await.unwrap()).await;
            assert_eq!(header, handler);
            assert_eq!(header.len(), 32, "{header}");
        }

        // The router's own 404 carries one too.
        let response = ask("/nowhere", Some("lost-1")).await.unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[X_REQUEST_ID], "lost-1");
    }
}
