//! A Redis-like keyspace for the simulation's Redis store host: strings, hashes and sorted
//! sets in `BTreeMap`s (so every walk is in one order), key expiry on the simulated
//! clock, and exactly the commands `store.lua` calls (`DEL`, `GET`, `HMGET`, `HSET`,
//! `MGET`, `SET` with `PX`/`EX`/`NX`/`XX`, `TIME`, `ZADD`, `ZRANGEBYSCORE` with `LIMIT`,
//! `ZREM`), answering as Redis does (replies, `WRONGTYPE`, arity errors).
//!
//! Expiry is Redis's lazy expiry with the clock frozen for the length of a script (Redis
//! does the same inside a script): a key past its time is absent to every command.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A Redis reply (RESP2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    Error(String),
    Array(Vec<Reply>),
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

#[derive(Debug, Clone)]
enum Value {
    Str(Vec<u8>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// Member to score; ordered walks sort by (score, member) as Redis's skiplist does.
    Zset(BTreeMap<Vec<u8>, f64>),
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    /// Unix ms at which the key is gone, if it expires.
    expires_at: Option<u64>,
}

/// The keys and the time the current script runs at.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keyspace {
    entries: BTreeMap<Vec<u8>, Entry>,
    /// The frozen clock of the script running (Unix ms).
    now_ms: u64,
}

fn int(n: usize) -> Reply {
    Reply::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn arity(name: &str) -> Reply {
    Reply::Error(format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase()))
}

fn number<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A sorted-set score as Redis reads one (`inf`, `-inf`, `+inf` and decimals).
fn score(bytes: &[u8]) -> Option<f64> {
    match bytes {
        b"inf" | b"+inf" => Some(f64::INFINITY),
        b"-inf" => Some(f64::NEG_INFINITY),
        _ => number::<f64>(bytes).filter(|value| !value.is_nan()),
    }
}

/// A `ZRANGEBYSCORE` bound: the score and whether it is exclusive (`(`).
fn bound(bytes: &[u8]) -> Option<(f64, bool)> {
    match bytes.strip_prefix(b"(") {
        Some(rest) => Some((score(rest)?, true)),
        None => Some((score(bytes)?, false)),
    }
}

impl Keyspace {
    /// Starts a script (or a command) at `now_ms`: keys past their time are dropped.
    pub(crate) fn at(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.entries.retain(|_, entry| entry.expires_at.is_none_or(|at| at > now_ms));
    }

    /// `GET`, outside a script (what the store's `get` reads).
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self.entries.get(key) {
            Some(Entry { value: Value::Str(value), .. }) => Some(value),
            _ => None,
        }
    }

    /// Runs one command.
    pub(crate) fn command(&mut self, args: &[Vec<u8>]) -> Reply {
        let Some((name, args)) = args.split_first() else { return Reply::Error("ERR empty command".to_owned()) };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        match name.as_str() {
            "DEL" if !args.is_empty() => int(args.iter().filter(|key| self.entries.remove(*key).is_some()).count()),
            "GET" if args.len() == 1 => self.strings(&args[..1]).pop().unwrap_or(Reply::Nil),
            "MGET" if !args.is_empty() => Reply::Array(self.strings(args)),
            "SET" if args.len() >= 2 => self.set(args),
            "HMGET" if args.len() >= 2 => self.hmget(&args[0], &args[1..]),
            "HSET" if args.len() >= 3 && args.len() % 2 == 1 => self.hset(&args[0], &args[1..]),
            "TIME" if args.is_empty() => Reply::Array(vec![
                Reply::Bulk((self.now_ms / 1000).to_string().into_bytes()),
                Reply::Bulk((self.now_ms % 1000 * 1000).to_string().into_bytes()),
            ]),
            "ZADD" if args.len() >= 3 && args.len() % 2 == 1 => self.zadd(&args[0], &args[1..]),
            "ZREM" if args.len() >= 2 => self.zrem(&args[0], &args[1..]),
            "ZRANGEBYSCORE" if args.len() >= 3 => self.zrangebyscore(args),
            "DEL" | "GET" | "MGET" | "SET" | "HMGET" | "HSET" | "TIME" | "ZADD" | "ZREM" | "ZRANGEBYSCORE" => {
                arity(&name)
            }
            _ => Reply::Error(format!(
                "ERR unknown command '{name}' (the simulated Redis has only what store.lua calls)"
            )),
        }
    }

    /// Each key's string value, nil for a missing key or one of another type (`MGET`).
    fn strings(&self, keys: &[Vec<u8>]) -> Vec<Reply> {
        keys.iter().map(|key| self.get(key).map_or(Reply::Nil, |value| Reply::Bulk(value.to_vec()))).collect()
    }

    fn set(&mut self, args: &[Vec<u8>]) -> Reply {
        let (key, value) = (&args[0], &args[1]);
        let (mut expires_at, mut only_new, mut only_old) = (None, false, false);
        let mut options = args[2..].iter();
        while let Some(option) = options.next() {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" => only_new = true,
                b"XX" => only_old = true,
                unit @ (b"PX" | b"EX") => {
                    let Some(ttl) = options.next().and_then(|ttl| number::<i64>(ttl)).filter(|ttl| *ttl > 0) else {
                        return Reply::Error("ERR invalid expire time in 'set' command".to_owned());
                    };
                    let ms = if unit == b"EX" { ttl.saturating_mul(1000) } else { ttl };
                    expires_at = Some(self.now_ms.saturating_add(ms.unsigned_abs()));
                }
                _ => return Reply::Error("ERR syntax error".to_owned()),
            }
        }
        let exists = self.entries.contains_key(key);
        if (only_new && exists) || (only_old && !exists) {
            return Reply::Nil;
        }
        self.entries.insert(key.clone(), Entry { value: Value::Str(value.clone()), expires_at });
        Reply::Status("OK".to_owned())
    }

    fn hmget(&self, key: &[u8], fields: &[Vec<u8>]) -> Reply {
        match self.entries.get(key).map(|entry| &entry.value) {
            None => Reply::Array(vec![Reply::Nil; fields.len()]),
            Some(Value::Hash(hash)) => Reply::Array(
                fields.iter().map(|field| hash.get(field).map_or(Reply::Nil, |v| Reply::Bulk(v.clone()))).collect(),
            ),
            Some(_) => Reply::Error(WRONGTYPE.to_owned()),
        }
    }

    fn hset(&mut self, key: &[u8], pairs: &[Vec<u8>]) -> Reply {
        let entry = self
            .entries
            .entry(key.to_vec())
            .or_insert_with(|| Entry { value: Value::Hash(BTreeMap::new()), expires_at: None });
        let Value::Hash(hash) = &mut entry.value else { return Reply::Error(WRONGTYPE.to_owned()) };
        int(pairs.chunks(2).filter(|pair| hash.insert(pair[0].clone(), pair[1].clone()).is_none()).count())
    }

    fn zadd(&mut self, key: &[u8], pairs: &[Vec<u8>]) -> Reply {
        let Some(scored) =
            pairs.chunks(2).map(|pair| Some((score(&pair[0])?, pair[1].clone()))).collect::<Option<Vec<_>>>()
        else {
            return Reply::Error("ERR value is not a valid float".to_owned());
        };
        let entry = self
            .entries
            .entry(key.to_vec())
            .or_insert_with(|| Entry { value: Value::Zset(BTreeMap::new()), expires_at: None });
        let Value::Zset(set) = &mut entry.value else { return Reply::Error(WRONGTYPE.to_owned()) };
        int(scored.into_iter().filter(|(score, member)| set.insert(member.clone(), *score).is_none()).count())
    }

    fn zrem(&mut self, key: &[u8], members: &[Vec<u8>]) -> Reply {
        let Some(entry) = self.entries.get_mut(key) else { return Reply::Int(0) };
        let Value::Zset(set) = &mut entry.value else { return Reply::Error(WRONGTYPE.to_owned()) };
        let removed = members.iter().filter(|member| set.remove(*member).is_some()).count();
        if set.is_empty() {
            self.entries.remove(key);
        }
        int(removed)
    }

    /// `ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]`, without scores
    /// (the script never asks for them).
    fn zrangebyscore(&self, args: &[Vec<u8>]) -> Reply {
        let (Some(min), Some(max)) = (bound(&args[1]), bound(&args[2])) else {
            return Reply::Error("ERR min or max is not a float".to_owned());
        };
        let (offset, count) = match &args[3..] {
            [] => (0, usize::MAX),
            [limit, offset, count] if limit.eq_ignore_ascii_case(b"LIMIT") => {
                let (Some(offset), Some(count)) = (number::<usize>(offset), number::<i64>(count)) else {
                    return Reply::Error("ERR value is not an integer or out of range".to_owned());
                };
                (offset, usize::try_from(count).unwrap_or(usize::MAX))
            }
            _ => return Reply::Error("ERR syntax error (the simulated Redis has no WITHSCORES)".to_owned()),
        };
        let set = match self.entries.get(&args[0]).map(|entry| &entry.value) {
            None => return Reply::Array(Vec::new()),
            Some(Value::Zset(set)) => set,
            Some(_) => return Reply::Error(WRONGTYPE.to_owned()),
        };
        let above = |s: f64| if min.1 { s > min.0 } else { s >= min.0 };
        let below = |s: f64| if max.1 { s < max.0 } else { s <= max.0 };
        let mut due: Vec<(f64, &Vec<u8>)> =
            set.iter().filter(|(_, s)| above(**s) && below(**s)).map(|(m, s)| (*s, m)).collect();
        due.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal).then_with(|| a.1.cmp(b.1)));
        Reply::Array(due.into_iter().skip(offset).take(count).map(|(_, member)| Reply::Bulk(member.clone())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(keyspace: &mut Keyspace, words: &[&str]) -> Reply {
        keyspace.command(&words.iter().map(|word| word.as_bytes().to_vec()).collect::<Vec<_>>())
    }

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().to_vec())
    }

    #[test]
    fn keys_expire_on_the_clock_and_types_are_kept_apart() {
        // Goal: SET PX expires a key at its time and not before; a hash read as a string is
        // nil for MGET and WRONGTYPE for HSET on a string, as in Redis.
        let mut keyspace = Keyspace::default();
        keyspace.at(1_000);
        assert_eq!(run(&mut keyspace, &["SET", "r", "v", "PX", "5"]), Reply::Status("OK".to_owned()));
        assert_eq!(run(&mut keyspace, &["HSET", "c", "fence", "7", "bytes", "3"]), Reply::Int(2));
        keyspace.at(1_004);
        assert_eq!(run(&mut keyspace, &["MGET", "r", "c", "x"]), Reply::Array(vec![bulk("v"), Reply::Nil, Reply::Nil]));
        assert_eq!(run(&mut keyspace, &["HSET", "r", "f", "1"]), Reply::Error(WRONGTYPE.to_owned()));
        keyspace.at(1_005);
        assert_eq!(run(&mut keyspace, &["GET", "r"]), Reply::Nil);
        assert_eq!(run(&mut keyspace, &["HMGET", "c", "fence", "records"]), Reply::Array(vec![bulk("7"), Reply::Nil]));
        assert_eq!(run(&mut keyspace, &["TIME"]), Reply::Array(vec![bulk("1"), bulk("5000")]));
    }

    #[test]
    fn sorted_sets_walk_by_score_then_member_with_a_limit() {
        // Goal: ZRANGEBYSCORE walks (score, member) order within inclusive bounds and
        // LIMIT; ZREM of the last member deletes the key.
        let mut keyspace = Keyspace::default();
        assert_eq!(run(&mut keyspace, &["ZADD", "z", "5", "b", "5", "a", "9", "c", "3", "d"]), Reply::Int(4));
        assert_eq!(run(&mut keyspace, &["ZADD", "z", "4", "d"]), Reply::Int(0));
        let walk = run(&mut keyspace, &["ZRANGEBYSCORE", "z", "-inf", "5", "LIMIT", "0", "2"]);
        assert_eq!(walk, Reply::Array(vec![bulk("d"), bulk("a")]));
        assert_eq!(run(&mut keyspace, &["ZRANGEBYSCORE", "z", "(5", "+inf"]), Reply::Array(vec![bulk("c")]));
        assert_eq!(run(&mut keyspace, &["ZREM", "z", "a", "b", "c", "d", "e"]), Reply::Int(4));
        assert_eq!(run(&mut keyspace, &["DEL", "z"]), Reply::Int(0));
    }
}
