//! The whole-request time limit of the HTTP trigger, answered in the error
//! envelope (tower-http's `Timeout` answers a bare status with no body).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

use super::http::{error_envelope, readable_cross_origin};
use super::request_id::X_REQUEST_ID;

/// Wraps a service so every request is answered within `limit`.
#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S> Deadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<S, B> tower::Service<Request<B>> for Deadline<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // For the log line of a request cut off: the id its answer carries
        // (`RequestIds`, outside this layer, has made sure of one).
        let request_id = request.headers().get(X_REQUEST_ID).cloned();
        DeadlineFuture {
            request_id,
            inner: self.inner.call(request),
            sleep: tokio::time::sleep(self.limit),
            limit: self.limit,
        }
    }
}

pin_project! {
    /// A request's answer, or 503 in the envelope once its time is up.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        limit: Duration,
        request_id: Option<HeaderValue>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for DeadlineFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(answer) = this.inner.poll(cx) {
            return Poll::Ready(answer);
        }
        if this.sleep.poll(cx).is_ready() {
            // A plugin's invocation carries on without its client: say so, since a
            // client that simply retries could do its work twice.
            let message = format!(
                "the request took longer than {}s; what it started may still complete, so check before retrying",
                this.limit.as_secs_f64()
            );
            let request_id = this.request_id.as_ref().and_then(|v| v.to_str().ok());
            tracing::warn!(
                request_id,
                limit_s = this.limit.as_secs_f64(),
                "request cut off at the time limit (503)"
            );
            // Readable from another origin whatever the route: a status
            // widget's poll cut off sees "may still complete", not a network
            // error, and the answer names nothing a credential guards.
            return Poll::Ready(Ok(readable_cross_origin(error_envelope(503, &message))));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_past_its_limit_is_answered_in_the_envelope() {
        let router = axum::Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "on time" }));
        let service = Deadline::new(router, Duration::from_millis(50));
        let request = |path: &str| Request::get(path).body(Body::empty()).unwrap();

        let response = service.clone().oneshot(request("/fast")).await.unwrap();
        assert_eq!(response.status(), 200);

        let response = service.oneshot(request("/slow")).await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["error"]["message"],
            "the request took longer than 0.05s; what it started may still complete, so check before retrying"
        );
    }
}
