//! The in-process kv backend: values and lists with TTLs in one map behind a
//! mutex, with Redis's semantics for every operation neo-ops uses. Per
//! process: queues and locks across replicas need Redis.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{KvError, Released};

/// A sorted set: (score, member), in Redis's order.
type SortedSet = BTreeSet<(i64, Vec<u8>)>;

enum Val {
    Bytes(Vec<u8>),
    List(VecDeque<Vec<u8>>),
    Sorted(SortedSet),
}

struct Entry {
    val: Val,
    expires: Option<Instant>,
}

impl Entry {
    fn expired(&self) -> bool {
        self.expires.is_some_and(|t| t <= Instant::now())
    }
}

#[derive(Default)]
struct Store {
    map: HashMap<String, Entry>,
    ops: u64,
}

#[derive(Default)]
pub struct MemoryKv {
    store: Mutex<Store>,
}

impl MemoryKv {
    /// Runs `f` on the store, dropping expired entries now and then.
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> Result<T, KvError>) -> Result<T, KvError> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.sweep();
        f(&mut store)
    }

    pub fn get(&self, k: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.with(|m| m.bytes(k).map(|b| b.cloned()))
    }

    pub fn get_within(&self, k: &str, limit: usize) -> Result<Option<Vec<u8>>, KvError> {
        self.with(|m| match m.bytes(k)? {
            Some(b) if b.len() > limit => Err(KvError::TooLarge { limit }),
            b => Ok(b.cloned()),
        })
    }

    pub fn set(&self, k: String, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        self.with(|m| {
            m.put(k, Val::Bytes(value.to_vec()), ttl);
            Ok(())
        })
    }

    pub fn set_nx(&self, k: String, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        self.with(|m| {
            if m.live(&k).is_some() {
                return Ok(false);
            }
            m.put(k, Val::Bytes(value.to_vec()), Some(ttl));
            Ok(true)
        })
    }

    pub fn delete(&self, k: &str) -> Result<bool, KvError> {
        self.with(|m| Ok(m.map.remove(k).is_some_and(|e| !e.expired())))
    }

    pub fn incr(&self, k: String, by: i64) -> Result<i64, KvError> {
        self.with(|m| {
            let current = match m.bytes(&k)? {
                None => 0,
                Some(b) => redis_integer(b)
                    .ok_or_else(|| KvError::WrongType("value is not an integer".into()))?,
            };
            let next = current
                .checked_add(by)
                .ok_or_else(|| KvError::WrongType("increment would overflow".into()))?;
            let expires = m.live(&k).and_then(|e| e.expires);
            m.map.insert(
                k,
                Entry {
                    val: Val::Bytes(next.to_string().into_bytes()),
                    expires,
                },
            );
            Ok(next)
        })
    }

    pub fn expire(&self, k: &str, ttl: Duration) -> Result<bool, KvError> {
        self.with(|m| match m.map.get_mut(k) {
            Some(e) if !e.expired() => {
                e.expires = Some(Instant::now() + ttl);
                Ok(true)
            }
            _ => Ok(false),
        })
    }

    pub fn ttl(&self, k: &str) -> Result<Option<u64>, KvError> {
        self.with(|m| {
            Ok(m.live(k)
                .and_then(|e| e.expires)
                .map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64))
        })
    }

    pub fn list_push(&self, k: &str, values: &[Vec<u8>]) -> Result<u64, KvError> {
        self.with(|m| {
            let list = m.list_mut(k)?;
            for v in values {
                list.push_front(v.clone());
            }
            Ok(list.len() as u64)
        })
    }

    pub fn list_len(&self, k: &str) -> Result<u64, KvError> {
        self.with(|m| Ok(m.list(k)?.map_or(0, |l| l.len() as u64)))
    }

    pub fn list_trim(&self, k: &str, start: i64, stop: i64) -> Result<(), KvError> {
        self.with(|m| {
            let Some(list) = m.list(k)? else {
                return Ok(());
            };
            let kept: VecDeque<Vec<u8>> = match span(list.len(), start, stop) {
                Some((a, b)) => list.range(a..=b).cloned().collect(),
                None => VecDeque::new(),
            };
            if kept.is_empty() {
                m.map.remove(k);
            } else {
                *m.list_mut(k)? = kept;
            }
            Ok(())
        })
    }

    pub fn list_range(&self, k: &str, start: i64, stop: i64) -> Result<Vec<Vec<u8>>, KvError> {
        self.with(|m| {
            let Some(list) = m.list(k)? else {
                return Ok(vec![]);
            };
            Ok(match span(list.len(), start, stop) {
                Some((a, b)) => list.range(a..=b).cloned().collect(),
                None => vec![],
            })
        })
    }

    pub fn list_range_within(
        &self,
        k: &str,
        start: i64,
        stop: i64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, KvError> {
        self.with(|m| {
            let Some(list) = m.list(k)? else {
                return Ok(vec![]);
            };
            let Some((a, b)) = span(list.len(), start, stop) else {
                return Ok(vec![]);
            };
            let mut bytes = 0usize;
            let mut out = Vec::new();
            for item in list.range(a..=b) {
                bytes = bytes.saturating_add(item.len() + super::ELEMENT_OVERHEAD);
                if bytes > limit {
                    return Err(KvError::TooLarge { limit });
                }
                out.push(item.clone());
            }
            Ok(out)
        })
    }

    pub fn list_remove(&self, k: &str, value: &[u8], count: i64) -> Result<u64, KvError> {
        self.with(|m| {
            let Some(list) = m.list(k)? else {
                return Ok(0);
            };
            let mut removed = 0;
            let mut kept = VecDeque::with_capacity(list.len());
            for item in list.iter() {
                if item == value && (count == 0 || removed < count.unsigned_abs()) {
                    removed += 1;
                } else {
                    kept.push_back(item.clone());
                }
            }
            *m.list_mut(k)? = kept;
            Ok(removed)
        })
    }

    pub fn list_move_oldest(&self, f: &str, t: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.with(|m| {
            // Both must be lists before anything moves (as Redis checks).
            if m.list(f)?.is_none_or(|l| l.is_empty()) {
                return Ok(None);
            }
            m.list_mut(t)?;
            let Some(item) = m.list_mut(f)?.pop_back() else {
                return Ok(None);
            };
            m.list_mut(t)?.push_front(item.clone());
            Ok(Some(item))
        })
    }

    pub fn list_replace(&self, f: &str, old: &[u8], t: &str, new: &[u8]) -> Result<bool, KvError> {
        self.with(|m| {
            // Both must be lists before anything changes (as Redis checks).
            m.list(t)?;
            if !m.remove_first(f, old)? {
                return Ok(false);
            }
            m.list_mut(t)?.push_front(new.to_vec());
            Ok(true)
        })
    }

    pub fn list_defer(
        &self,
        f: &str,
        old: &[u8],
        (t, due_ms): (&str, i64),
        new: &[u8],
    ) -> Result<bool, KvError> {
        self.with(|m| {
            m.sorted(t)?;
            if !m.remove_first(f, old)? {
                return Ok(false);
            }
            let set = m.sorted_mut(t)?;
            // A member is in a set once, at its latest score (as ZADD).
            set.retain(|(_, member)| member != new);
            set.insert((due_ms, new.to_vec()));
            Ok(true)
        })
    }

    pub fn release_due(
        &self,
        f: &str,
        t: &str,
        (now_ms, latest_ms): (i64, i64),
        limit: u32,
    ) -> Result<Released, KvError> {
        self.with(|m| {
            m.list(t)?;
            let Some(set) = m.sorted(f)? else {
                return Ok(Released {
                    moved: 0,
                    next_due_ms: None,
                });
            };
            let due: Vec<(i64, Vec<u8>)> = set
                .iter()
                .take_while(|(score, _)| *score <= now_ms)
                .take(limit as usize)
                .cloned()
                .collect();
            let late: Vec<(i64, Vec<u8>)> = set
                .iter()
                .rev()
                .take_while(|(score, _)| *score > latest_ms)
                .cloned()
                .collect();
            // The soonest of them first, as Redis takes them.
            let late = late.into_iter().rev().take(limit as usize);
            let set = m.sorted_mut(f)?;
            for entry in &due {
                set.remove(entry);
            }
            for (score, member) in late {
                set.remove(&(score, member.clone()));
                set.insert((latest_ms, member));
            }
            let next_due_ms = set.first().map(|(score, _)| *score);
            if set.is_empty() {
                m.map.remove(f);
            }
            if !due.is_empty() {
                let list = m.list_mut(t)?;
                for (_, member) in due.iter() {
                    list.push_front(member.clone());
                }
            }
            Ok(Released {
                moved: due.len() as u64,
                next_due_ms,
            })
        })
    }

    pub fn sorted_range(
        &self,
        k: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<(Vec<u8>, i64)>, KvError> {
        self.with(|m| {
            let Some(set) = m.sorted(k)? else {
                return Ok(vec![]);
            };
            Ok(match span(set.len(), start, stop) {
                Some((a, b)) => set
                    .iter()
                    .skip(a)
                    .take(b - a + 1)
                    .map(|(score, member)| (member.clone(), *score))
                    .collect(),
                None => vec![],
            })
        })
    }

    pub fn sorted_len(&self, k: &str) -> Result<u64, KvError> {
        self.with(|m| Ok(m.sorted(k)?.map_or(0, |s| s.len() as u64)))
    }

    pub fn unlock(&self, k: &str, token: &str) -> Result<bool, KvError> {
        self.with(|m| {
            let held = m.bytes(k)?.is_some_and(|v| v == token.as_bytes());
            if held {
                m.map.remove(k);
            }
            Ok(held)
        })
    }

    pub fn extend_lock(&self, k: String, token: &str, ttl: Duration) -> Result<bool, KvError> {
        self.with(|m| {
            let held = m.bytes(&k)?.is_some_and(|v| v == token.as_bytes());
            if held {
                m.put(k, Val::Bytes(token.as_bytes().to_vec()), Some(ttl));
            }
            Ok(held)
        })
    }
}

/// Redis-style inclusive range (negative from the end) clamped to a length.
/// An integer as Redis reads one for `INCRBY`: optional `-`, no `+`, no
/// leading zeros (`"0"` itself aside), within `i64`.
fn redis_integer(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let canonical = match digits {
        [b'0'] => b.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    canonical
        .then(|| std::str::from_utf8(b).ok()?.parse().ok())
        .flatten()
}

fn span(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let norm = |i: i64| if i < 0 { len + i } else { i };
    let (a, b) = (norm(start).max(0), norm(stop).min(len - 1));
    (a <= b && len > 0).then_some((a as usize, b as usize))
}

impl Store {
    /// Drops expired entries now and then, so memory tracks live keys.
    fn sweep(&mut self) {
        self.ops += 1;
        if self.ops.is_multiple_of(1024) {
            self.map.retain(|_, e| !e.expired());
        }
    }

    fn live(&self, k: &str) -> Option<&Entry> {
        self.map.get(k).filter(|e| !e.expired())
    }

    fn put(&mut self, k: String, val: Val, ttl: Option<Duration>) {
        let expires = ttl.map(|t| Instant::now() + t);
        self.map.insert(k, Entry { val, expires });
    }

    fn bytes(&self, k: &str) -> Result<Option<&Vec<u8>>, KvError> {
        match self.live(k).map(|e| &e.val) {
            None => Ok(None),
            Some(Val::Bytes(b)) => Ok(Some(b)),
            Some(Val::List(_)) => Err(KvError::WrongType("key holds a list".into())),
            Some(Val::Sorted(_)) => Err(KvError::WrongType("key holds a sorted set".into())),
        }
    }

    fn list(&self, k: &str) -> Result<Option<&VecDeque<Vec<u8>>>, KvError> {
        match self.live(k).map(|e| &e.val) {
            None => Ok(None),
            Some(Val::List(l)) => Ok(Some(l)),
            Some(_) => Err(KvError::WrongType("key holds a value, not a list".into())),
        }
    }

    /// Removes the first `old` from list `k`; false when it is not there.
    fn remove_first(&mut self, k: &str, old: &[u8]) -> Result<bool, KvError> {
        let Some(at) = self
            .list(k)?
            .and_then(|l| l.iter().position(|item| item == old))
        else {
            return Ok(false);
        };
        self.list_mut(k)?.remove(at);
        Ok(true)
    }

    fn list_mut(&mut self, k: &str) -> Result<&mut VecDeque<Vec<u8>>, KvError> {
        match self.live_or_new(k, || Val::List(VecDeque::new())) {
            Val::List(l) => Ok(l),
            _ => Err(KvError::WrongType("key holds a value, not a list".into())),
        }
    }

    /// The live value at `k`, a new one from `new` when there is none.
    fn live_or_new(&mut self, k: &str, new: impl FnOnce() -> Val) -> &mut Val {
        if self.live(k).is_none() {
            let entry = Entry {
                val: new(),
                expires: None,
            };
            self.map.insert(k.to_string(), entry);
        }
        &mut self.map.get_mut(k).expect("inserted above").val
    }

    fn sorted(&self, k: &str) -> Result<Option<&SortedSet>, KvError> {
        match self.live(k).map(|e| &e.val) {
            None => Ok(None),
            Some(Val::Sorted(s)) => Ok(Some(s)),
            Some(_) => Err(KvError::WrongType(
                "key holds a value, not a sorted set".into(),
            )),
        }
    }

    fn sorted_mut(&mut self, k: &str) -> Result<&mut SortedSet, KvError> {
        match self.live_or_new(k, || Val::Sorted(BTreeSet::new())) {
            Val::Sorted(s) => Ok(s),
            _ => Err(KvError::WrongType(
                "key holds a value, not a sorted set".into(),
            )),
        }
    }
}
