//! How tasks share. The one way we take a lock: a panic while a lock is
//! held (a bug) would poison it; every value we guard is whole between
//! statements, so the lock is taken over rather than the gateway stopped.
//! And the one way a writer task gathers a batch from its channel
//! ([`gather`]): the group committers, the recorder, the case-folder
//! writer. And the one loop of a queue worker ([`rounds`]): the
//! dispatcher's and the webhook sender's.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The next batch for a writer task: waits for one item (or takes the one
/// `held` back from the last batch), then takes what is already waiting,
/// up to `max` items. An item whose `key` is already in the batch ends it
/// and is held for the next, so that a batch holds one item per key.
/// `None` once the channel is closed and nothing is held.
pub async fn gather<T, K: Eq + Hash>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    held: &mut Option<T>,
    max: usize,
    key: impl Fn(&T) -> Option<K>,
) -> Option<Vec<T>> {
    let first = match held.take() {
        Some(t) => t,
        None => rx.recv().await?,
    };
    let mut keys: HashSet<K> = key(&first).into_iter().collect();
    let mut batch = vec![first];
    while batch.len() < max {
        let Ok(t) = rx.try_recv() else { break };
        match key(&t) {
            Some(k) if keys.contains(&k) => {
                *held = Some(t);
                break;
            }
            k => {
                keys.extend(k);
                batch.push(t);
            }
        }
    }
    Some(batch)
}

/// The loop of a queue worker (the dispatcher, the webhook sender): runs
/// `round` until `stop` turns true. Each round starts tasks into the set and
/// says how long to sleep until something is due; `wake` cuts the sleep
/// short. At the end it waits for the tasks, so that their results are
/// recorded.
pub async fn rounds<E: std::fmt::Display>(
    what: &str,
    wake: &tokio::sync::Notify,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut round: impl for<'a> FnMut(
        &'a mut tokio::task::JoinSet<()>,
    )
        -> futures_util::future::BoxFuture<'a, Result<std::time::Duration, E>>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let wait = match round(&mut tasks).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "{what} cannot read the store");
                std::time::Duration::from_secs(1)
            }
        };
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_batch_takes_what_waits_and_one_item_per_key() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        for i in [1, 2, 3, 2, 4, 5, 6] {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        let mut held = None;
        let key = |i: &i32| Some(*i);
        assert_eq!(
            super::gather(&mut rx, &mut held, 10, key).await,
            Some(vec![1, 2, 3])
        );
        assert_eq!(held, Some(2));
        assert_eq!(
            super::gather(&mut rx, &mut held, 2, key).await,
            Some(vec![2, 4])
        );
        assert_eq!(
            super::gather(&mut rx, &mut held, 10, |_| None::<i32>).await,
            Some(vec![5, 6])
        );
        assert_eq!(super::gather(&mut rx, &mut held, 10, key).await, None);
    }
}
