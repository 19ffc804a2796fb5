//! The API tokens a server knows, by hash. Refreshed from storage every second; a hash the
//! cache does not know is looked up in storage at once (within a rate limit), so a new token
//! works on its first request. A refresh that finds a token gone signals its revocation to the
//! requests still running with it: open streams end and parked claims answer 401.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tasklane_core::model::Role;
use tasklane_core::time::Ts;
use tasklane_core::Error;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::state::AppState;

/// Storage lookups of unknown token hashes allowed per second; beyond it an unknown token is
/// refused from the cache alone, so a flood of bad tokens cannot load the database. A token
/// refused that way still starts working at the next refresh.
const LOOKUPS_PER_SECOND: u32 = 20;

/// A token the server knows, and the signal of its revocation.
pub(super) struct Known {
    pub(super) name: String,
    pub(super) role: Role,
    pub(super) revoked: watch::Sender<bool>,
    /// The refresh generation when this entry was added: a refresh that began earlier has not
    /// seen the token and must not take it for revoked.
    added_in: u64,
}

/// Known tokens by hash, plus last-use times waiting to be written.
#[derive(Clone, Default)]
pub struct TokenCache {
    by_hash: Arc<RwLock<HashMap<String, Arc<Known>>>>,
    used: Arc<Mutex<HashMap<String, Ts>>>,
    /// Bumped when a refresh starts reading storage.
    generation: Arc<AtomicU64>,
    /// Storage lookups of unknown hashes in the current one-second window.
    lookups: Arc<Mutex<(Option<Instant>, u32)>>,
}

impl TokenCache {
    fn cached(&self, hash: &str) -> Option<Arc<Known>> {
        self.by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
    }

    /// The token with this hash: from the cache, else from storage if the rate limit allows.
    pub(super) async fn resolve(
        &self,
        state: &AppState,
        hash: &str,
    ) -> Result<Option<Arc<Known>>, ApiError> {
        if let Some(known) = self.cached(hash) {
            return Ok(Some(known));
        }
        if !self.may_look_up() {
            return Ok(None);
        }
        let key = hash.to_string();
        let Some(token) = state.store.read(move |r| r.api_token(&key)).await? else {
            return Ok(None);
        };
        let added_in = self.generation.load(Ordering::SeqCst);
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        let known = map.entry(token.token_hash).or_insert_with(|| {
            Arc::new(Known {
                name: token.name,
                role: token.role,
                revoked: watch::channel(false).0,
                added_in,
            })
        });
        Ok(Some(known.clone()))
    }

    fn may_look_up(&self) -> bool {
        let mut window = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if window
            .0
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            *window = (Some(now), 0);
        }
        if window.1 >= LOOKUPS_PER_SECOND {
            return false;
        }
        window.1 += 1;
        true
    }

    /// Brings the cache in line with what storage holds now, and signals the revocation of every
    /// token that is gone.
    pub async fn refresh(&self, state: &AppState) -> Result<(), Error> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let tokens = state.store.read(|r| r.api_tokens()).await?;
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        let mut fresh = HashMap::with_capacity(tokens.len());
        for t in tokens {
            let known = map.remove(&t.token_hash).unwrap_or_else(|| {
                Arc::new(Known {
                    name: t.name,
                    role: t.role,
                    revoked: watch::channel(false).0,
                    added_in: generation,
                })
            });
            fresh.insert(t.token_hash, known);
        }
        for (hash, known) in map.drain() {
            if known.added_in >= generation {
                // Looked up after this refresh read storage: not known to be gone.
                fresh.insert(hash, known);
            } else {
                known.revoked.send_replace(true);
            }
        }
        *map = fresh;
        Ok(())
    }
    /// Notes that the token with this hash was used at `at` (written by the next flush).
    pub(super) fn record_use(&self, hash: String, at: Ts) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, at);
    }

    /// Writes the last-use times gathered since the previous flush, in one transaction.
    pub async fn flush_last_use(&self, state: &AppState) -> Result<(), Error> {
        let used: Vec<(String, Ts)> = self
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        if used.is_empty() {
            return Ok(());
        }
        state
            .store
            .write(move |w| {
                for (hash, at) in &used {
                    w.touch_api_token(hash, *at)?;
                }
                Ok(())
            })
            .await
    }

    /// Keeps the cache fresh (every second) and last-use times written (every five seconds).
    pub fn spawn_maintenance(&self, state: AppState) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                if let Err(e) = cache.refresh(&state).await {
                    tracing::warn!(error = %e, "token cache refresh failed");
                }
                n += 1;
                if n.is_multiple_of(5) {
                    if let Err(e) = cache.flush_last_use(&state).await {
                        tracing::warn!(error = %e, "recording token use failed");
                    }
                }
            }
        });
    }
}
