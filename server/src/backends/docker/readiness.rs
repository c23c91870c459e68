//! Readiness: PostgreSQL is ready when it answers `SELECT 1` over its wire
//! protocol, the strictest check a client can make (a login and a query,
//! not just an open port).

use std::net::IpAddr;
use std::time::Duration;

/// How often the readiness probe retries `SELECT 1`.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);

/// Retries `SELECT 1` every [`PROBE_INTERVAL`], or at once when `kick` is
/// notified, until it succeeds; returns the number of attempts.
pub(super) async fn probe_ready(ip: IpAddr, password: String, kick: &tokio::sync::Notify) -> u32 {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if select_one(ip, &password).await.is_ok() {
            return attempts;
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = kick.notified() => {}
        }
    }
}

async fn connect(
    ip: IpAddr,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(ip.to_string())
        .port(5432)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(1))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn select_one(ip: IpAddr, password: &str) -> Result<(), tokio_postgres::Error> {
    connect(ip, password)
        .await?
        .simple_query("SELECT 1")
        .await
        .map(drop)
}

pub(super) async fn server_version(
    ip: IpAddr,
    password: &str,
) -> Result<String, tokio_postgres::Error> {
    let row = connect(ip, password)
        .await?
        .query_one("SELECT version()", &[])
        .await?;
    row.try_get(0)
}
