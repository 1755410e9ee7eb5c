//! Query execution off the shards: a small pool of worker threads that
//! evaluate PromQL, reading through [`FanoutSelect`].
//!
//! PromQL evaluation is CPU-heavy and synchronous. Running it on a shard's
//! runtime would stall that shard's scrapes for the whole query, so HTTP
//! handlers hand queries to these workers and await the answer; a worker
//! reads series by message from every shard (each shard serves its part in
//! slices between its own work) and evaluates. The pool's size caps how
//! many queries run at once; more wait in a bounded queue, and a full queue
//! is refused rather than letting memory grow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_query::{Engine, EngineOptions, QueryError, QueryLimits, QueryResult};
use tokio::sync::oneshot;

use crate::tsdb::{FanoutSelect, Mailboxes};

/// Most queries waiting for a worker before new ones are refused.
const QUEUE: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

/// Why a query did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine's error.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Every worker is busy and the queue is full.
    #[error("too many concurrent queries; try again later")]
    Overloaded,
    /// The server is shutting down.
    #[error("kiln is shutting down")]
    Shutdown,
    /// A plain select failed.
    #[error(transparent)]
    Select(kiln_storage::SelectError),
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub enum QuerySpec {
    /// An instant query at `t_ms`.
    Instant {
        /// The PromQL text.
        query: String,
        /// Evaluation time.
        t_ms: i64,
    },
    /// A range query.
    Range {
        /// The PromQL text.
        query: String,
        /// First step.
        start_ms: i64,
        /// Last step bound.
        end_ms: i64,
        /// Step width.
        step_ms: i64,
    },
}

/// The worker pool. Cheap to share: the engine and mailboxes are behind
/// `Arc`s.
pub struct QueryService {
    jobs: crossbeam_channel::Sender<Job>,
    engine: Arc<Engine>,
    mailboxes: Mailboxes,
    timeout: Duration,
}

impl QueryService {
    /// Starts `workers` threads.
    pub fn start(
        workers: usize,
        opts: EngineOptions,
        mailboxes: Mailboxes,
        timeout: Duration,
    ) -> std::io::Result<QueryService> {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("kiln-query-{i}"))
                .spawn(move || {
                    // Ends when the service (the only sender) is dropped.
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })?;
        }
        Ok(QueryService {
            jobs,
            engine: Arc::new(Engine::new(opts)),
            mailboxes,
            timeout,
        })
    }

    /// Evaluates a query on a worker. `timeout` (the request's own) is
    /// capped by `--query.timeout`. Dropping the returned future cancels
    /// the query at its next check.
    pub async fn run(
        &self,
        spec: QuerySpec,
        timeout: Option<Duration>,
    ) -> Result<QueryResult, RunError> {
        let timeout = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let cancel = Arc::new(AtomicBool::new(false));
        let limits = QueryLimits {
            deadline: Some(Instant::now() + timeout),
            cancel: Some(cancel.clone()),
        };
        let (tx, rx) = oneshot::channel();
        let engine = self.engine.clone();
        let mailboxes = self.mailboxes.clone();
        let job: Job = Box::new(move || {
            let store = FanoutSelect {
                mailboxes: &mailboxes,
                deadline: limits.deadline,
            };
            let r = match &spec {
                QuerySpec::Instant { query, t_ms } => {
                    engine.instant_query(&store, query, *t_ms, &limits)
                }
                QuerySpec::Range {
                    query,
                    start_ms,
                    end_ms,
                    step_ms,
                } => engine.range_query(&store, query, *start_ms, *end_ms, *step_ms, &limits),
            };
            let _ = tx.send(r);
        });
        self.jobs.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => RunError::Overloaded,
            crossbeam_channel::TrySendError::Disconnected(_) => RunError::Shutdown,
        })?;
        // If the client goes away this future is dropped and the guard
        // tells the worker to stop; after completion the flag is moot.
        let _guard = CancelOnDrop(cancel);
        Ok(rx.await.map_err(|_| RunError::Shutdown)??)
    }
}

impl QueryService {
    /// Runs one select through every shard on a worker (for `/federate`).
    pub async fn select(
        &self,
        matchers: Vec<kiln_storage::Matcher>,
        hints: kiln_storage::SelectHints,
    ) -> Result<kiln_storage::SeriesBatch, RunError> {
        let deadline = Some(Instant::now() + self.timeout);
        let (tx, rx) = oneshot::channel();
        let mailboxes = self.mailboxes.clone();
        let job: Job = Box::new(move || {
            let store = FanoutSelect {
                mailboxes: &mailboxes,
                deadline,
            };
            let _ = tx.send(kiln_storage::Select::select(&store, &matchers, &hints));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => RunError::Overloaded,
            crossbeam_channel::TrySendError::Disconnected(_) => RunError::Shutdown,
        })?;
        rx.await
            .map_err(|_| RunError::Shutdown)?
            .map_err(RunError::Select)
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
