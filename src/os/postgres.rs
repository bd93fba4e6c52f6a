//! PostgreSQL dumps and restores for backups: `pg_dump`, `pg_restore` and
//! `psql` run as the cluster's OS user (peer authentication over the unix
//! socket, no password anywhere).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct Postgres {
    /// Where `pg_dump`, `pg_restore` and `psql` are (None: on PATH).
    pub bin_dir: Option<PathBuf>,
    /// The socket directory (`-h`).
    pub host: String,
    /// The OS user the tools run as, and the database role they log in as.
    pub user: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("cannot run {0}: {1}")]
    Spawn(&'static str, std::io::Error),
    #[error("{0} failed: {1}")]
    Failed(&'static str, String),
    #[error("no OS user {0}")]
    NoUser(String),
}

/// `"name"` with embedded quotes doubled.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Postgres {
    fn tool(&self, name: &'static str) -> Result<Command, PostgresError> {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        };
        let user = nix::unistd::User::from_name(&self.user)
            .ok()
            .flatten()
            .ok_or_else(|| PostgresError::NoUser(self.user.clone()))?;
        let mut command = Command::new(program);
        command
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .current_dir("/")
            .env("HOME", &user.dir)
            .args(["-h", &self.host, "-U", &self.user])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(command)
    }

    async fn finish(
        name: &'static str,
        child: tokio::process::Child,
    ) -> Result<String, PostgresError> {
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| PostgresError::Spawn(name, e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(PostgresError::Failed(
                name,
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    }

    /// Runs `sql` in database `db`, returning its unaligned output.
    pub async fn psql(&self, db: &str, sql: &str) -> Result<String, PostgresError> {
        let mut command = self.tool("psql")?;
        command
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-f",
                "-",
            ])
            .stdin(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| PostgresError::Spawn("psql", e))?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(sql.as_bytes())
            .await
            .map_err(|e| PostgresError::Spawn("psql", e))?;
        drop(stdin);
        Self::finish("psql", child).await
    }

    pub async fn exists(&self, db: &str) -> Result<bool, PostgresError> {
        let sql = format!("SELECT 1 FROM pg_database WHERE datname = {}", literal(db));
        Ok(self.psql("postgres", &sql).await? == "1")
    }

    /// Dumps database `db` (custom format) into `file`, created 0600.
    pub async fn dump(&self, db: &str, file: &Path) -> Result<(), PostgresError> {
        use std::os::unix::fs::OpenOptionsExt;
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(file)
            .map_err(|e| PostgresError::Spawn("pg_dump", e))?;
        let mut command = self.tool("pg_dump")?;
        command
            .args(["--format=custom", "-d", db])
            .stdout(Stdio::from(out));
        let child = command
            .spawn()
            .map_err(|e| PostgresError::Spawn("pg_dump", e))?;
        Self::finish("pg_dump", child).await.map(|_| ())
    }

    /// Replaces database `db` with the dump in `file`: the dump goes into a
    /// new database first; only once it loaded whole is it renamed over the
    /// old one (dropped last). A failure leaves `db` as it was.
    pub async fn restore(&self, db: &str, file: &Path) -> Result<(), PostgresError> {
        let staging = format!("{db}_sp_restore");
        let old = format!("{db}_sp_old");
        let owner_sql = format!(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {}",
            literal(db)
        );
        let owner = self.psql("postgres", &owner_sql).await?;
        let owner = if owner.is_empty() {
            self.user.clone()
        } else {
            owner
        };
        self.psql(
            "postgres",
            &format!(
                "DROP DATABASE IF EXISTS {s};\nCREATE DATABASE {s} OWNER {o} TEMPLATE template0;",
                s = ident(&staging),
                o = ident(&owner)
            ),
        )
        .await?;
        let loaded = async {
            let input =
                std::fs::File::open(file).map_err(|e| PostgresError::Spawn("pg_restore", e))?;
            let mut command = self.tool("pg_restore")?;
            command
                .args(["--exit-on-error", "--single-transaction", "-d", &staging])
                .stdin(Stdio::from(input));
            let child = command
                .spawn()
                .map_err(|e| PostgresError::Spawn("pg_restore", e))?;
            Self::finish("pg_restore", child).await
        }
        .await;
        if let Err(e) = loaded {
            let _ = self
                .psql(
                    "postgres",
                    &format!("DROP DATABASE IF EXISTS {}", ident(&staging)),
                )
                .await;
            return Err(e);
        }
        let swap = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {l};\n\
             DROP DATABASE IF EXISTS {old};\n\
             DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_database WHERE datname = {l}) THEN \
               EXECUTE 'ALTER DATABASE {q} RENAME TO {oldq}'; END IF; END $$;\n\
             ALTER DATABASE {s} RENAME TO {d};\n\
             DROP DATABASE IF EXISTS {old};",
            l = literal(db),
            old = ident(&old),
            q = ident(db).replace('\'', "''"),
            oldq = ident(&old).replace('\'', "''"),
            s = ident(&staging),
            d = ident(db),
        );
        self.psql("postgres", &swap).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
