//! `EVAL` in the simulation: a script runs in an embedded Lua 5.1 (the version Redis
//! embeds) against a [`Keyspace`], with Redis's conversions between Lua values and
//! replies, and its answer read as idem-redis's driver reads it.
//!
//! Deterministic by construction: each run gets a fresh interpreter with only the `table`,
//! `string` and `math` libraries and the base library less `dofile`, `loadfile`, `load`
//! and `print` (Redis removes the same), without `math.random` and `math.randomseed`
//! (libc's `rand()`, shared by the whole process: a script calling them would draw from
//! other threads' sequence; `store.lua` does not call them), and `TIME` answers the
//! simulated clock.

use idem_core::StoreError;
use idem_redis::script::{Answer, Call};
use mlua::{Lua, LuaOptions, MultiValue, StdLib, Table, Value};

use crate::keyspace::{Keyspace, Reply};

/// A script that did not run to an answer (a Lua error, or an error reply from a command
/// it called), as Redis reports it: what the driver maps to `Unavailable`.
#[derive(Debug, thiserror::Error)]
#[error("the simulated Redis answered an error: {0}")]
struct ErrorReply(String);

/// Runs `script` on `call` (its `KEYS` and `ARGV`) against `keyspace` at `now_ms` (the
/// frozen clock of the script), as `EVAL` does; returns the script's reply.
pub(crate) fn eval(script: &str, keyspace: &mut Keyspace, call: &Call, now_ms: u64) -> Reply {
    keyspace.at(now_ms);
    match run(script, keyspace, call) {
        Ok(reply) => reply,
        Err(error) => Reply::Error(format!("ERR script: {error}")),
    }
}

fn run(script: &str, keyspace: &mut Keyspace, call: &Call) -> mlua::Result<Reply> {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::new())?;
    let globals = lua.globals();
    for removed in ["dofile", "loadfile", "load", "loadstring", "print"] {
        globals.raw_set(removed, Value::Nil)?;
    }
    let math: Table = globals.raw_get("math")?;
    for removed in ["random", "randomseed"] {
        math.raw_set(removed, Value::Nil)?;
    }
    globals.raw_set("KEYS", strings(&lua, &call.keys)?)?;
    globals.raw_set("ARGV", strings(&lua, &call.args)?)?;
    lua.scope(|scope| {
        let command = scope.create_function_mut(|lua, args: MultiValue| match keyspace.command(&arguments(args)?) {
            Reply::Error(message) => Err(mlua::Error::RuntimeError(message)),
            reply => to_lua(lua, reply),
        })?;
        let redis = lua.create_table()?;
        redis.raw_set("call", command)?;
        globals.raw_set("redis", redis)?;
        let answer: Value = lua.load(script).set_name("store.lua").eval()?;
        Ok(from_lua(&answer))
    })
}

fn strings(lua: &Lua, values: &[Vec<u8>]) -> mlua::Result<Table> {
    lua.create_sequence_from(values.iter().map(|value| lua.create_string(value)).collect::<mlua::Result<Vec<_>>>()?)
}

/// `redis.call`'s arguments: strings as they are, numbers as Redis prints them (integers
/// without a fraction; others as the shortest decimal that reads back, where Redis uses
/// `%.17g`: the script passes no such number); anything else is Redis's error.
fn arguments(args: MultiValue) -> mlua::Result<Vec<Vec<u8>>> {
    args.into_iter()
        .map(|arg| match arg {
            Value::String(text) => Ok(text.as_bytes().to_vec()),
            Value::Integer(n) => Ok(n.to_string().into_bytes()),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e17 => Ok(format!("{n:.0}").into_bytes()),
            Value::Number(n) => Ok(n.to_string().into_bytes()),
            _ => {
                Err(mlua::Error::RuntimeError("Lua redis lib command arguments must be strings or integers".to_owned()))
            }
        })
        .collect()
}

/// A reply as Lua sees it from `redis.call`: integers as numbers, bulk strings as strings,
/// nil as `false`, arrays as tables (nil elements `false`), a status as `{ok = ...}`.
fn to_lua(lua: &Lua, reply: Reply) -> mlua::Result<Value> {
    Ok(match reply {
        Reply::Nil => Value::Boolean(false),
        Reply::Int(n) => Value::Integer(n),
        Reply::Bulk(bytes) => Value::String(lua.create_string(bytes)?),
        Reply::Status(text) => {
            let table = lua.create_table()?;
            table.raw_set("ok", text)?;
            Value::Table(table)
        }
        Reply::Error(message) => return Err(mlua::Error::RuntimeError(message)),
        Reply::Array(items) => {
            let values = items.into_iter().map(|item| to_lua(lua, item)).collect::<mlua::Result<Vec<_>>>()?;
            Value::Table(lua.create_sequence_from(values)?)
        }
    })
}

/// A script's return value as Redis replies it: numbers truncated to integers, strings
/// as bulk strings, `true` as 1, `false` and nil as nil, a table with `err` as an error,
/// with `ok` as a status, any other table as an array up to its first nil.
fn from_lua(value: &Value) -> Reply {
    match value {
        Value::Nil | Value::Boolean(false) => Reply::Nil,
        Value::Boolean(true) => Reply::Int(1),
        Value::Integer(n) => Reply::Int(*n),
        #[expect(clippy::cast_possible_truncation, reason = "Redis truncates a Lua number to an integer reply")]
        Value::Number(n) => Reply::Int(*n as i64),
        Value::String(text) => Reply::Bulk(text.as_bytes().to_vec()),
        Value::Table(table) => {
            if let Ok(Value::String(message)) = table.raw_get::<Value>("err") {
                return Reply::Error(message.to_string_lossy());
            }
            if let Ok(Value::String(status)) = table.raw_get::<Value>("ok") {
                return Reply::Status(status.to_string_lossy());
            }
            let mut items = Vec::new();
            for index in 1.. {
                match table.raw_get::<Value>(index) {
                    Ok(Value::Nil) | Err(_) => break,
                    Ok(item) => items.push(from_lua(&item)),
                }
            }
            Reply::Array(items)
        }
        _ => Reply::Nil,
    }
}

/// A reply as idem-redis's driver reads a script's answer (`Vec<Vec<u8>>`): an array of
/// strings is the answer; nil is an empty one; an error reply is `Unavailable` (or
/// `Corrupt` for `WRONGTYPE`, as `redis_error` maps it); any other shape is `Corrupt`
/// (the driver's type error).
pub(crate) fn answer(reply: Reply) -> Result<Answer, StoreError> {
    let shape = |reply: &Reply| StoreError::Corrupt { detail: format!("the script answered {reply:?}") };
    match reply {
        Reply::Nil => Ok(Answer(Vec::new())),
        Reply::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Reply::Bulk(bytes) => Ok(bytes),
                Reply::Status(text) => Ok(text.into_bytes()),
                other => Err(shape(&other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Answer),
        Reply::Error(message) if message.contains("WRONGTYPE") => Err(StoreError::Corrupt { detail: message }),
        Reply::Error(message) => {
            Err(StoreError::Unavailable { source: Box::new(ErrorReply(message)), retry_after: None })
        }
        other => Err(shape(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> Call {
        Call { keys: vec![b"k".to_vec()], args: args.iter().map(|arg| arg.as_bytes().to_vec()).collect() }
    }

    #[test]
    fn replies_convert_as_in_redis() {
        // Goal: Redis's conversion rules, both ways: a number reply truncates, false is
        // nil, an array stops at its first nil, nil bulk arrives as false, a status as
        // {ok=...}, an error table is an error reply; TIME is the frozen clock.
        let mut keyspace = Keyspace::default();
        let script = "redis.call('SET', KEYS[1], ARGV[1], 'PX', 10) \
            local v = redis.call('MGET', KEYS[1], 'missing') \
            local ok = redis.call('SET', 'x', 1) \
            return { v[1], tostring(v[2]), ok.ok, 3.9, redis.call('TIME')[2], nil, 'never' }";
        let reply = eval(script, &mut keyspace, &call(&["hello"]), 42_007);
        let bulk = |text: &str| Reply::Bulk(text.as_bytes().to_vec());
        assert_eq!(reply, Reply::Array(vec![bulk("hello"), bulk("false"), bulk("OK"), Reply::Int(3), bulk("7000")]));
        assert_eq!(eval("return false", &mut keyspace, &call(&[]), 0), Reply::Nil);
        assert_eq!(eval("return { err = 'no' }", &mut keyspace, &call(&[]), 0), Reply::Error("no".to_owned()));
        assert!(matches!(eval("return redis.call('HSET', KEYS[1], 'f', 'v')", &mut keyspace, &call(&[]), 42_008),
            Reply::Error(message) if message.contains("WRONGTYPE")));
        assert!(matches!(eval("return dofile('/etc/passwd')", &mut keyspace, &call(&[]), 0), Reply::Error(_)));
        assert!(matches!(eval("return math.random(10)", &mut keyspace, &call(&[]), 0), Reply::Error(_)));
    }
}
