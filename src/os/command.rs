//! Running a program to its end within a time limit, its output captured.
//! Arguments never carry secrets (they show in `ps`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {} s and was stopped", .limit.as_secs())]
    TimedOut { program: String, limit: Duration },
}

/// Runs `program args...` in `dir` with stdin closed and the given extra
/// environment; killed if it outlives `limit`.
pub async fn run(
    program: &Path,
    args: &[&str],
    dir: Option<&Path>,
    env: &[(&str, &str)],
    limit: Duration,
) -> Result<Finished, CommandError> {
    let name = program.display().to_string();
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropped on timeout: the child is killed, not left behind.
        .kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let child = command.spawn().map_err(|source| CommandError::Spawn {
        program: name.clone(),
        source,
    })?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok(Finished {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Ok(Err(source)) => Err(CommandError::Spawn {
            program: name,
            source,
        }),
        Err(_) => Err(CommandError::TimedOut {
            program: name,
            limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_exit_code_and_time_limit() {
        let sh = Path::new("/bin/sh");
        let done = run(
            sh,
            &["-c", "echo out; echo err >&2; exit 3"],
            None,
            &[("X", "1")],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(!done.success);
        assert_eq!(done.code, Some(3));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr, "err\n");
        let started = std::time::Instant::now();
        let stopped = run(
            sh,
            &["-c", "sleep 30"],
            None,
            &[],
            Duration::from_millis(300),
        )
        .await;
        assert!(matches!(stopped, Err(CommandError::TimedOut { .. })));
        assert!(started.elapsed() < Duration::from_secs(10));
        let missing = run(
            Path::new("/nonexistent/program"),
            &[],
            None,
            &[],
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(missing, Err(CommandError::Spawn { .. })));
    }
}
