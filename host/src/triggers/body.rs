//! Request bodies for plugins: read whole, up to [`MAX_BODY`] each, and
//! within a budget of bytes that the bodies being read share (public routes
//! one share, routes that need a role another), so a flood of large bodies
//! (each under the limit) cannot make the host buffer without bound: a
//! request whose body would overrun its share gets 503 and `Retry-After`,
//! and what it had sent is let go.

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use http_body_util::BodyExt as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::timeout::TimeoutError;

use super::http::{busy, error_envelope};

/// Largest request body the host reads for a plugin (a route's `max_body`
/// may say less).
pub const MAX_BODY: usize = crate::manifest::MAX_REQUEST_BODY;
/// Longest a client may leave the body stalled once the headers are in (the
/// wait restarts with each chunk; the request's own limit bounds the whole).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest an anonymous client may take to send a whole body, however it
/// trickles: a browser's report arrives at once, and a few connections each
/// holding a body's share of the public budget for minutes would shut
/// every other public body out.
pub const PUBLIC_BODY_WITHIN: Duration = Duration::from_secs(10);
/// Longest a client on a route that needs a role may take to send a whole
/// body: well inside the request's own limit, so a trickled upload is
/// answered 408 ("not sent whole"), not the request limit's 503, which
/// says work may have started when none did.
pub const OPERATOR_BODY_WITHIN: Duration = Duration::from_secs(60);
/// Bytes of bodies sent to anonymous (public) routes held at once: 16
/// bodies at the limit.
pub const PUBLIC_BODIES: usize = 32 << 20;
/// Bytes of bodies sent to routes that need a role, held at once: a
/// public flood never takes these, as admission keeps operators' slots.
pub const OPERATOR_BODIES: usize = 32 << 20;

/// The bytes request bodies may still take: one share for public routes,
/// one for the rest.
#[derive(Clone)]
pub struct BodyBudget {
    public: Arc<Semaphore>,
    operator: Arc<Semaphore>,
}

impl Default for BodyBudget {
    fn default() -> Self {
        Self {
            public: Arc::new(Semaphore::new(PUBLIC_BODIES)),
            operator: Arc::new(Semaphore::new(OPERATOR_BODIES)),
        }
    }
}

impl BodyBudget {
    fn share(&self, public: bool) -> &Arc<Semaphore> {
        if public { &self.public } else { &self.operator }
    }

    /// Bytes the bodies being read hold now, of public routes or the rest.
    pub fn held(&self, public: bool) -> usize {
        let size = if public {
            PUBLIC_BODIES
        } else {
            OPERATOR_BODIES
        };
        size - self.share(public).available_permits()
    }
}

/// A body read whole, holding its share of the budget until dropped (when
/// the request has been answered).
pub struct ReadBody {
    pub bytes: Bytes,
    _share: Option<OwnedSemaphorePermit>,
}

/// Reads the body up to `limit` bytes (the route's, at most [`MAX_BODY`];
/// a larger declared length is refused before any of it is read); past it
/// 413, stalled (or, on a public route, not whole within
/// [`PUBLIC_BODY_WITHIN`]) 408, unreadable 400, and no budget left 503,
/// each in the envelope.
pub async fn read_body(
    budget: &BodyBudget,
    public: bool,
    limit: usize,
    headers: &HeaderMap,
    body: Body,
    request_id: &str,
) -> Result<ReadBody, Response> {
    let limit = limit.min(MAX_BODY);
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        tracing::debug!(
            request_id,
            declared = declared.unwrap_or(0),
            "refused a body over the route's limit (413)"
        );
        return Err(too_large(limit));
    }
    let read = read_pieces(budget, public, limit, body, request_id);
    let within = match public {
        true => PUBLIC_BODY_WITHIN,
        false => OPERATOR_BODY_WITHIN,
    };
    let (pieces, share) = whole_within(within, read, request_id).await?;
    Ok(ReadBody {
        bytes: pieces.into_bytes(),
        _share: share,
    })
}

/// A body's bytes as they arrive: a body sent in one piece is kept as it
/// came, a longer one in one buffer. Kept piece by piece, a body sent as a
/// million one-byte chunks held some thirty times what it was counted as
/// (a `Bytes` each, and the read buffers they pin). The buffer grows with
/// what arrives, never ahead of it on the strength of a declared length (a
/// client declaring 2 MiB and sending two bytes would take 2 MiB of the
/// budget).
#[derive(Default)]
struct Pieces {
    first: Bytes,
    rest: Vec<u8>,
}

impl Pieces {
    /// Adds `data`; the buffer never grows past `limit` (the body's) on
    /// its own account.
    fn push(&mut self, data: Bytes, limit: usize) {
        if self.first.is_empty() && self.rest.is_empty() {
            self.first = data;
            return;
        }
        let needed = self.first.len() + self.rest.len() + data.len();
        if needed > self.rest.capacity() {
            // Doubling, but never past the largest body: a body within
            // the limit is never charged more than the limit.
            let grown = (2 * self.rest.capacity()).min(limit).max(needed);
            self.rest.reserve_exact(grown - self.rest.len());
        }
        if self.rest.is_empty() {
            self.rest
                .extend_from_slice(&std::mem::take(&mut self.first));
        }
        self.rest.extend_from_slice(&data);
    }

    /// The bytes held, spare capacity included.
    fn held(&self) -> usize {
        self.first.len() + self.rest.capacity()
    }

    fn into_bytes(self) -> Bytes {
        match self.rest.is_empty() {
            true => self.first,
            false => Bytes::from(self.rest),
        }
    }
}

/// What `read` read, or 408 once `within` has passed, however the body
/// trickles in.
async fn whole_within<T>(
    within: Duration,
    read: impl Future<Output = Result<T, Response>>,
    request_id: &str,
) -> Result<T, Response> {
    match tokio::time::timeout(within, read).await {
        Ok(read) => read,
        Err(_) => {
            tracing::debug!(request_id, "a request body came too slowly (408)");
            Err(error_envelope(
                408,
                &format!("request body not sent whole within {}s", within.as_secs()),
            ))
        }
    }
}

/// 413 in the envelope, naming the limit.
fn too_large(limit: usize) -> Response {
    error_envelope(
        413,
        &format!("request body too large (at most {limit} bytes here)"),
    )
}

/// The body's pieces as they arrive, what each adds to the bytes held
/// taking its share of the budget.
async fn read_pieces(
    budget: &BodyBudget,
    public: bool,
    limit: usize,
    mut body: Body,
    request_id: &str,
) -> Result<(Pieces, Option<OwnedSemaphorePermit>), Response> {
    let mut pieces = Pieces::default();
    let mut share: Option<OwnedSemaphorePermit> = None;
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| unreadable(e.into_inner(), request_id))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing a plugin reads
        };
        len += data.len();
        if len > limit {
            tracing::debug!(request_id, "refused a body over the route's limit (413)");
            return Err(too_large(limit));
        }
        // Each piece takes its share as it arrives: what is counted is what
        // is held, whatever the body's declared length.
        let held = pieces.held();
        pieces.push(data, limit);
        let grown = pieces.held().saturating_sub(held);
        let Ok(piece) = budget
            .share(public)
            .clone()
            .try_acquire_many_owned(grown as u32)
        else {
            // At debug, as admission's refusals are not logged one by one:
            // a flood would otherwise flood the log too.
            tracing::debug!(
                request_id,
                "refused a body: the bodies being read fill the budget (503)"
            );
            return Err(busy());
        };
        match &mut share {
            Some(held) => held.merge(piece),
            None => share = Some(piece),
        }
    }
    Ok((pieces, share))
}

/// 408 for a body that stalled, 400 for one that broke off.
fn unreadable(e: axum::BoxError, request_id: &str) -> Response {
    if caused_by::<TimeoutError>(&*e) {
        tracing::debug!(request_id, "a request body stalled (408)");
        error_envelope(
            408,
            &format!("request body stalled for {}s", BODY_READ_TIMEOUT.as_secs()),
        )
    } else {
        error_envelope(400, "unreadable request body")
    }
}

/// Whether `E` is `error` or anywhere in its chain of sources.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<E>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    use tower_http::timeout::RequestBodyTimeout;

    fn reader(budget: BodyBudget) -> RequestBodyTimeout<Router> {
        let read = Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: Body| async move {
                match read_body(&budget, false, MAX_BODY, &headers, body, "r").await {
                    Ok(read) => (StatusCode::OK, read.bytes).into_response(),
                    Err(refused) => refused,
                }
            }),
        );
        RequestBodyTimeout::new(read, Duration::from_millis(50))
    }

    /// A body in a million one-byte pieces is held in one buffer, no larger
    /// than twice what it holds (a piece each held some thirty times more);
    /// one piece alone is kept as it came.
    #[test]
    fn pieces_are_held_in_one_buffer() {
        let mut pieces = Pieces::default();
        let n = 1 << 20;
        for _ in 0..n {
            pieces.push(Bytes::from_static(b"x"), MAX_BODY);
        }
        assert!(pieces.held() <= 2 * n, "{} held for {n}", pieces.held());
        let mut near_the_limit = Pieces::default();
        for _ in 0..(MAX_BODY - 1) / 1000 {
            near_the_limit.push(Bytes::from(vec![b'z'; 1000]), MAX_BODY);
        }
        assert!(
            near_the_limit.held() <= MAX_BODY,
            "{}",
            near_the_limit.held()
        );
        assert_eq!(pieces.into_bytes().len(), n);
        let mut one = Pieces::default();
        let whole = Bytes::from(vec![b'y'; 1000]);
        one.push(whole.clone(), MAX_BODY);
        assert_eq!(one.held(), 1000);
        assert_eq!(one.into_bytes().as_ptr(), whole.as_ptr(), "not copied");
        let mut three = Pieces::default();
        for piece in ["abc", "defg", "hij"] {
            three.push(Bytes::from_static(piece.as_bytes()), MAX_BODY);
        }
        assert!(three.held() <= 20, "{}", three.held());
        assert_eq!(three.into_bytes(), "abcdefghij");
    }

    /// A body that stops arriving is answered 408 in the envelope, one over
    /// the limit 413, and the rest of a readable one is read.
    #[tokio::test]
    async fn a_stalled_body_gets_408() {
        let service = reader(BodyBudget::default());
        let send = |body: Body| {
            let request = axum::http::Request::post("/").body(body).unwrap();
            service.clone().oneshot(request)
        };
        let stalled = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let response = send(Body::from_stream(stalled)).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let text = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&text).contains("request body stalled for 30s"),
            "{text:?}"
        );
        let big = Body::from(vec![b'x'; MAX_BODY + 1]);
        assert_eq!(
            send(big).await.unwrap().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let ok = send(Body::from("hello")).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }

    /// Bodies being read share one budget: a body that would overrun it is
    /// refused with 503, an empty one never is, and each piece takes its
    /// share as it arrives, all given back once the body is dropped. A
    /// public route's bodies have a share of their own.
    #[tokio::test]
    async fn bodies_being_read_share_one_budget() {
        let budget = BodyBudget::default();
        let held = budget
            .operator
            .clone()
            .try_acquire_many_owned((OPERATOR_BODIES - 10) as u32)
            .unwrap();
        let service = reader(budget.clone());
        let send = |body: Body| {
            let request = axum::http::Request::post("/").body(body).unwrap();
            service.clone().oneshot(request)
        };
        let response = send(Body::from("eleven byte")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(send(Body::empty()).await.unwrap().status(), StatusCode::OK);
        let ten = send(Body::from("ten bytes!")).await.unwrap();
        assert_eq!(ten.status(), StatusCode::OK);
        let no_headers = HeaderMap::new();
        let eleven = Body::from("eleven byte");
        let public = read_body(&budget, true, MAX_BODY, &no_headers, eleven, "r");
        assert_eq!(public.await.unwrap().bytes, "eleven byte");
        drop(held);
        assert_eq!(
            budget.operator.available_permits(),
            OPERATOR_BODIES,
            "all given back"
        );
        assert_eq!(budget.public.available_permits(), PUBLIC_BODIES);

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let chunks = futures::stream::unfold(rx, |mut rx| async { Some((rx.recv().await?, rx)) });
        let mut request = Box::pin(budget_holding_read(
            budget.clone(),
            Body::from_stream(chunks),
        ));
        tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        assert!(futures::poll!(request.as_mut()).is_pending());
        assert_eq!(budget.operator.available_permits(), OPERATOR_BODIES - 3);
        tx.send(Ok(Bytes::from_static(b"de"))).await.unwrap();
        drop(tx);
        let read = request.await.unwrap();
        assert_eq!(read.bytes, "abcde");
        assert_eq!(budget.operator.available_permits(), OPERATOR_BODIES - 5);
        drop(read);
        assert_eq!(budget.operator.available_permits(), OPERATOR_BODIES);
    }

    async fn budget_holding_read(budget: BodyBudget, body: Body) -> Result<ReadBody, Response> {
        read_body(&budget, false, MAX_BODY, &HeaderMap::new(), body, "r").await
    }

    /// A body trickled in, each piece well inside the stall limit, is cut
    /// off with 408 once the whole-body limit has passed.
    #[tokio::test]
    async fn a_trickled_body_is_cut_off_at_the_whole_body_limit() {
        let budget = BodyBudget::default();
        let trickle = futures::stream::unfold(0, |n| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
        });
        let read = read_pieces(&budget, false, 8, Body::from_stream(trickle), "r");
        let cut = whole_within(Duration::from_millis(200), read, "r").await;
        let refused = cut.err().unwrap();
        assert_eq!(refused.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(budget.operator.available_permits(), OPERATOR_BODIES);
    }

    /// A route's own limit: a larger declared length is refused before a
    /// byte is read (the body here never arrives), a larger body as it
    /// comes, and the limit is named; a body at the limit is read.
    #[tokio::test]
    async fn a_routes_limit_is_its_largest_body() {
        let budget = BodyBudget::default();
        let read = async |declared: Option<&str>, body: Body| {
            let mut headers = HeaderMap::new();
            if let Some(n) = declared {
                headers.insert("content-length", n.parse().unwrap());
            }
            read_body(&budget, true, 8, &headers, body, "r").await
        };
        let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let refused = read(Some("9"), Body::from_stream(never))
            .await
            .err()
            .unwrap();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let text = axum::body::to_bytes(refused.into_body(), 1024)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&text)
                .contains("request body too large (at most 8 bytes here)"),
            "{text:?}"
        );
        let nine = read(None, Body::from("123456789")).await.err().unwrap();
        assert_eq!(nine.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let eight = read(Some("8"), Body::from("12345678")).await.ok().unwrap();
        assert_eq!(eight.bytes, "12345678");
    }
}
