//! TEST SCAFFOLDING: a unix socket through which black-box tests move the
//! daemon's clock (to expire keys without waiting). Started only by the
//! hidden `serve --test-hooks-socket PATH` flag; never set in production.
//!
//! Protocol: one command per line, one answer line (`ok` or `error: ...`).
//! `advance-clock SECONDS`

use crate::app::App;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

pub fn spawn(path: PathBuf, app: Arc<App>) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tracing::warn!(socket = %path.display(), "test hooks are enabled (test scaffolding)");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let app = app.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = handle(&app, &line);
                    if write
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

fn handle(app: &App, line: &str) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("advance-clock"), Some(seconds)) => match seconds.parse::<i64>() {
            Ok(seconds) => {
                app.clock.advance(chrono::Duration::seconds(seconds));
                "ok".to_owned()
            }
            Err(e) => format!("error: {e}"),
        },
        _ => format!("error: unknown command {line:?}"),
    }
}
