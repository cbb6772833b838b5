//! The queue as operators see it: filtered lists, one request, the ones
//! that need a person, the ZUP deadlines; and the commands on requests
//! (retry one, retry the dead, cancel), each audited before it is done.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Ops, OpsError};
use crate::lifecycle::{self, Event};
use crate::store::{Listing, Order, RequestRecord, Selector, State as RState};
use crate::time::now_ms;

/// How long an open request may wait before it counts as stuck.
const STUCK_AFTER_MS: u64 = 5 * 60_000;

/// Which requests: every field that is set must match.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// queued, sending, awaiting, retrying, fetched, delivered, dead, cancelled.
    pub state: Option<String>,
    pub registry: Option<String>,
    pub service: Option<String>,
    pub case: Option<String>,
    pub client: Option<String>,
    /// Text the last error contains (case-insensitive).
    pub error: Option<String>,
    /// Only requests filed longer ago than this (e.g. 10m, 2h, 1d).
    pub older_than: Option<String>,
}

impl Filter {
    fn check(&self) -> Result<(Option<RState>, u64), OpsError> {
        let mut errs = Vec::new();
        let state = match self.state.as_deref() {
            None => None,
            Some(s) => match RState::ALL.iter().find(|x| x.name() == s) {
                Some(x) => Some(*x),
                None => {
                    errs.push(("/state".into(), format!("unknown state {s:?}")));
                    None
                }
            },
        };
        let before = match self.older_than.as_deref() {
            None => u64::MAX,
            Some(d) => match crate::config::parse_duration(d) {
                Ok(d) => now_ms().saturating_sub(d.as_millis() as u64),
                Err(e) => {
                    errs.push(("/older_than".into(), e));
                    0
                }
            },
        };
        if errs.is_empty() {
            Ok((state, before))
        } else {
            Err(OpsError::Invalid(errs))
        }
    }

    /// The store's selector for this filter.
    fn selector(&self) -> Result<Selector, OpsError> {
        let (state, before) = self.check()?;
        Ok(Selector {
            state,
            registry: self.registry.clone(),
            service: self.service.clone(),
            case: self.case.clone(),
            client: self.client.clone(),
            error: self.error.clone(),
            created_before: (before != u64::MAX).then_some(before),
            attention: false,
        })
    }
}

/// A page of the queue.
#[derive(Debug)]
pub struct Listed {
    pub requests: Vec<RequestRecord>,
    /// How many match the filter, on every page.
    pub total: u64,
    /// The last id of this page when there is a next one.
    pub next: Option<String>,
}

/// Bulk retry of dead requests.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"registry": "cadastre", "dry_run": true}))]
pub struct RetryDeadIn {
    pub registry: Option<String>,
    pub service: Option<String>,
    pub case: Option<String>,
    pub client: Option<String>,
    pub error: Option<String>,
    pub older_than: Option<String>,
    /// Only count and list; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"matched": 2, "retried": 0, "dry_run": true, "ids": ["01KAW3Q3ZJ0N5W9K5T1X0Y8B2C", "01KAW3Q3ZJ7M4T2W5T1X0Y8B2D"]}))]
pub struct RetryDeadOut {
    pub matched: usize,
    pub retried: usize,
    pub dry_run: bool,
    pub ids: Vec<String>,
}

impl Ops {
    /// One request, with every attempt.
    pub async fn request(&self, id: &str) -> Result<RequestRecord, OpsError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| OpsError::NotFound(format!("no request {id}")))
    }

    /// A page of the requests that match, newest or oldest first, after
    /// the id `after`; `limit` from 1 to 500.
    pub async fn list(
        &self,
        filter: &Filter,
        newest: bool,
        after: Option<String>,
        limit: usize,
    ) -> Result<Listed, OpsError> {
        if !(1..=500).contains(&limit) {
            return Err(OpsError::invalid("/limit", "between 1 and 500"));
        }
        let selector = filter.selector()?;
        // One more than the page: whether there is a next one.
        let mut page = self
            .store
            .list(&Listing {
                selector: selector.clone(),
                order: if newest { Order::Newest } else { Order::Oldest },
                after,
                limit: limit + 1,
            })
            .await?;
        let total = self.store.count(&selector).await?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = more
            .then(|| page.last().map(|r| r.id.to_string()))
            .flatten();
        Ok(Listed {
            requests: page,
            total,
            next,
        })
    }

    /// Every matching request, oldest first.
    async fn select(&self, filter: &Filter) -> Result<Vec<RequestRecord>, OpsError> {
        let selector = filter.selector()?;
        let mut out = Vec::new();
        loop {
            let page = self
                .store
                .list(&Listing {
                    selector: selector.clone(),
                    order: Order::Oldest,
                    after: out.last().map(|r: &RequestRecord| r.id.to_string()),
                    limit: 1000,
                })
                .await?;
            let done = page.len() < 1000;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// The newest 100 requests that need an operator: dead, failed twice,
    /// or open for over five minutes. From the attention index and the
    /// state index sought at that age, so at most 500 records are read.
    pub async fn stuck(&self, now: u64) -> Result<Vec<RequestRecord>, OpsError> {
        let newest = |selector: Selector| Listing {
            selector,
            order: Order::Newest,
            after: None,
            limit: 100,
        };
        let mut out = self
            .store
            .list(&newest(Selector {
                attention: true,
                ..Selector::default()
            }))
            .await?;
        for s in RState::UNFETCHED {
            let old = newest(Selector {
                state: Some(s),
                created_before: Some(now.saturating_sub(STUCK_AFTER_MS)),
                ..Selector::default()
            });
            out.extend(self.store.list(&old).await?);
        }
        out.sort_by(|a, b| b.id.cmp(&a.id));
        out.dedup_by(|a, b| a.id == b.id);
        out.truncate(100);
        Ok(out)
    }

    /// The open requests by ZUP deadline, nearest first (at most 500).
    pub async fn deadlines(&self) -> Result<Vec<RequestRecord>, OpsError> {
        Ok(self.store.by_deadline(u64::MAX, 500).await?)
    }

    /// Makes a request due now; a dead or cancelled one starts over.
    async fn retry_one(&self, id: &str) -> Result<RequestRecord, OpsError> {
        // Due times are in the store's clock (shared by every instance).
        let now = self.store.clock_ms();
        let before = self.request(id).await?;
        let updated = self
            .store
            .update(id, &|r| lifecycle::apply(r, &Event::Retry, now))
            .await?;
        match updated {
            Some(r) => {
                self.dispatcher.wake();
                Ok(r)
            }
            None => Err(OpsError::StateConflict(format!(
                "request {id} is {}: nothing to retry",
                before.state.name()
            ))),
        }
    }

    /// `who` retries one request (audited first).
    pub async fn retry(&self, who: &str, id: &str) -> Result<RequestRecord, OpsError> {
        let r = self.request(id).await?;
        self.audit(who, "admin.retry", Some(&r), "requested")
            .await?;
        self.retry_one(id).await
    }

    /// `who` cancels a request that has not finished (audited first).
    pub async fn cancel(&self, who: &str, id: &str) -> Result<RequestRecord, OpsError> {
        let r = self.request(id).await?;
        self.audit(who, "admin.cancel", Some(&r), "requested")
            .await?;
        let now = self.store.clock_ms();
        let cancel = Event::Cancel { by: who };
        let updated = self
            .store
            .update(id, &|r| lifecycle::apply(r, &cancel, now))
            .await?;
        updated.ok_or_else(|| {
            OpsError::StateConflict(format!(
                "request {id} is {}: already finished",
                r.state.name()
            ))
        })
    }

    /// `who` retries every dead request that matches (audited), or with
    /// `dry_run` only counts them.
    pub async fn retry_dead(&self, who: &str, b: RetryDeadIn) -> Result<RetryDeadOut, OpsError> {
        let filter = Filter {
            state: Some(RState::Dead.name().into()),
            registry: b.registry,
            service: b.service,
            case: b.case,
            client: b.client,
            error: b.error,
            older_than: b.older_than,
        };
        let dead = self.select(&filter).await?;
        let ids: Vec<String> = dead.iter().map(|r| r.id.to_string()).collect();
        let mut retried = 0;
        if !b.dry_run {
            self.audit(
                who,
                "admin.retry-dead",
                None,
                &format!("{} requests", ids.len()),
            )
            .await?;
            for id in &ids {
                if self.retry_one(id).await.is_ok() {
                    retried += 1;
                }
            }
        }
        Ok(RetryDeadOut {
            matched: ids.len(),
            retried,
            dry_run: b.dry_run,
            ids,
        })
    }
}
