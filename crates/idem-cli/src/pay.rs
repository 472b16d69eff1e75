//! `idem pay`: send one payment to a running server (`idem serve`) through the retrying
//! client, and print the answer, the key, the attempts, and whether it was a replay.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use idem_client::{Failure, IdempotentRetryLayer, OperationKey, RetryError, RetryReport};
use idem_core::Key;
use tower::{Layer, ServiceExt};

/// The most bytes of the server's answer printed (the demo API answers a few hundred).
const ANSWER_BYTES_MAX: usize = 1024 * 1024;

/// `--attempt-timeout`'s default: the client library's [`idem_client::ATTEMPT_TIMEOUT_DEFAULT`].
const ATTEMPT_TIMEOUT_DEFAULT_TEXT: &str = "10s";
/// `--deadline`'s default: the client library's [`idem_client::DEADLINE_DEFAULT`].
const DEADLINE_DEFAULT_TEXT: &str = "30s";

/// Options of `idem pay`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The server's base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = parse_server)]
    server: String,
    /// The amount, a decimal number such as 100.00.
    #[arg(long, value_parser = parse_amount)]
    amount: String,
    /// The currency: three upper-case letters (ISO 4217), such as USD.
    #[arg(long, value_parser = parse_currency)]
    currency: String,
    /// Who receives the payment.
    #[arg(long, value_parser = parse_destination)]
    destination: String,
    /// The idempotency key (1 to 255 visible ASCII characters). Give the key of an earlier
    /// payment to resend it: the server replays its first answer instead of paying twice.
    /// Default: a fresh UUID v4.
    #[arg(long, value_parser = parse_key)]
    key: Option<Key>,
    /// Bearer token of the payer; keys and payments are scoped to it.
    #[arg(long, env = "IDEM_TOKEN", value_parser = parse_token)]
    token: Option<String>,
    /// Attempts at most, the first included. The default (the client library's) waits out
    /// the lease of a server that crashed while holding the key (`idem serve`'s default lease).
    #[arg(long, default_value_t = idem_client::ATTEMPTS_MAX_DEFAULT)]
    attempts: u32,
    /// How long one attempt may wait for an answer (e.g. 10s, 500ms).
    #[arg(long, default_value = ATTEMPT_TIMEOUT_DEFAULT_TEXT, value_parser = humantime::parse_duration)]
    attempt_timeout: Duration,
    /// How long all attempts together may take (e.g. 30s).
    #[arg(long, default_value = DEADLINE_DEFAULT_TEXT, value_parser = humantime::parse_duration)]
    deadline: Duration,
}

/// An `http://HOST:PORT[/PREFIX]` URL, kept as the text given (without a trailing `/`).
fn parse_server(given: &str) -> Result<String, String> {
    let uri: Uri =
        given.parse().map_err(|error| format!("not a URL ({error}); expected e.g. http://127.0.0.1:8080"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) if uri.query().is_none() => Ok(given.trim_end_matches('/').to_owned()),
        (Some("https"), _) => Err("https is not supported; use http://HOST:PORT".to_owned()),
        _ => Err(format!("{given:?} is not an http://HOST:PORT URL")),
    }
}

fn parse_amount(given: &str) -> Result<String, String> {
    let (whole, fraction) = given.split_once('.').unwrap_or((given, "0"));
    let digits = |part: &str| !part.is_empty() && part.len() <= 30 && part.bytes().all(|b| b.is_ascii_digit());
    if digits(whole) && digits(fraction) {
        Ok(given.to_owned())
    } else {
        Err("expected a decimal number such as 100.00".to_owned())
    }
}

fn parse_currency(given: &str) -> Result<String, String> {
    if given.len() == 3 && given.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(given.to_owned())
    } else {
        Err("expected three upper-case letters such as USD".to_owned())
    }
}

fn parse_destination(given: &str) -> Result<String, String> {
    match given.chars().count() {
        1..=255 => Ok(given.to_owned()),
        chars => Err(format!("expected 1 to 255 characters, got {chars}")),
    }
}

fn parse_key(given: &str) -> Result<Key, String> {
    Key::try_from(given).map_err(|error| error.to_string())
}

fn parse_token(given: &str) -> Result<String, String> {
    match HeaderValue::try_from(format!("Bearer {given}")) {
        Ok(_) if !given.is_empty() => Ok(given.to_owned()),
        _ => Err("a token must be non-empty printable text without line breaks".to_owned()),
    }
}

/// The JSON body: the amount as the number text given (never through floating point).
fn payment_body(args: &Args) -> Result<String, serde_json::Error> {
    let currency = serde_json::to_string(&args.currency)?;
    let destination = serde_json::to_string(&args.destination)?;
    Ok(format!(r#"{{"amount":{},"currency":{currency},"destination":{destination}}}"#, args.amount))
}

/// Sends the payment; exit code 0 for a 2xx answer, 1 for any other answer.
pub(crate) fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(pay(args))
}

async fn pay(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let layer = IdempotentRetryLayer::builder()
        .attempts_max(args.attempts)
        .attempt_timeout(args.attempt_timeout)
        .deadline(args.deadline)
        .build()?;
    let client = layer.layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let mut request =
        Request::post(format!("{}/payments", args.server)).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = &args.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(key) = &args.key {
        request = request.extension(OperationKey(key.clone()));
    }
    let request = request.body(payment_body(args)?)?;

    let response = match client.oneshot(request).await {
        Ok(response) => response,
        Err(error) => return Err(explain(error)),
    };
    let status = response.status();
    let report = response.extensions().get::<RetryReport>().cloned().expect("the layer reports on every response");
    let body = http_body_util::Limited::new(response.into_body(), ANSWER_BYTES_MAX)
        .collect()
        .await
        .map_err(|error| format!("the server's answer could not be read: {error}"))?
        .to_bytes();

    let mut out = std::io::stdout().lock();
    writeln!(out, "status: {}", describe(status))?;
    writeln!(out, "key: {}", report.key.as_ref().map_or("-", Key::as_str))?;
    writeln!(out, "attempts: {}", report.attempts)?;
    writeln!(out, "replayed: {}", report.replayed)?;
    if let Some(expires_at) = report.expires_at {
        writeln!(out, "expires: {}", httpdate::fmt_http_date(expires_at))?;
    }
    writeln!(out, "{}", String::from_utf8_lossy(&body))?;
    Ok(if status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn describe(status: StatusCode) -> String {
    format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))
}

/// The error for a person: what happened, with the key to resend and what the server said.
fn explain(error: RetryError) -> Box<dyn std::error::Error> {
    let said = match &error {
        RetryError::KeyReused { body, .. }
        | RetryError::KeyExpired { body, .. }
        | RetryError::Exhausted { last: Failure::Status { body, .. }, .. }
        | RetryError::DeadlineExceeded { last: Some(Failure::Status { body, .. }), .. } => {
            Some(String::from_utf8_lossy(body).into_owned())
        }
        _ => None,
    };
    let mut message = error.to_string();
    if let (Some(key), RetryError::Exhausted { .. } | RetryError::DeadlineExceeded { .. }) = (error.key(), &error) {
        message.push_str(&format!("\nthe payment may or may not have been made; resend with --key {key} to find out"));
    }
    if let Some(said) = said.filter(|said| !said.is_empty()) {
        message.push_str(&format!("\nthe server said: {said}"));
    }
    message.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_with_readable_reasons() {
        // Goal: each bad flag value is refused with a message that says what is expected.
        assert!(parse_amount("100.00").is_ok() && parse_amount("7").is_ok());
        for bad in ["", "1e2", "-5", "1.", ".5", "10,00", "abc"] {
            assert!(parse_amount(bad).unwrap_err().contains("decimal number"), "{bad:?}");
        }
        assert!(parse_currency("usd").is_err() && parse_currency("USDT").is_err() && parse_currency("EUR").is_ok());
        assert!(parse_server("https://x").unwrap_err().contains("https is not supported"));
        assert!(parse_server("127.0.0.1:8080").is_err());
        assert!(parse_server("http://127.0.0.1:8080").is_ok());
        assert!(parse_key("has space").unwrap_err().contains("0x20"));
        assert!(parse_token("a\nb").is_err());
        assert!(parse_destination("").is_err());
    }

    #[test]
    fn the_retry_defaults_are_the_client_librarys() {
        // Goal: `idem pay` without flags retries exactly as idem-client's defaults do, whose
        // budget is checked against the server's default lease.
        let parse = |text| humantime::parse_duration(text).expect("the defaults are durations");
        assert_eq!(parse(ATTEMPT_TIMEOUT_DEFAULT_TEXT), idem_client::ATTEMPT_TIMEOUT_DEFAULT);
        assert_eq!(parse(DEADLINE_DEFAULT_TEXT), idem_client::DEADLINE_DEFAULT);
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            pay: Args,
        }
        let cli = Cli::try_parse_from(["pay", "--amount", "1", "--currency", "USD", "--destination", "m"])
            .expect("the required flags are given");
        assert_eq!(cli.pay.attempts, idem_client::ATTEMPTS_MAX_DEFAULT);
        assert_eq!(cli.pay.attempt_timeout, idem_client::ATTEMPT_TIMEOUT_DEFAULT);
        assert_eq!(cli.pay.deadline, idem_client::DEADLINE_DEFAULT);
    }
}
