-- The pgapp database's roles and schema. Run by pgapp-db-setup.service as
-- the PostgreSQL superuser, in database pgapp, at every start (idempotent),
-- after NixOS has made role pgapp and the database it owns.
--
-- PostgREST logs in as pgapp (the owner) and serves anonymous requests as
-- pgapp_anon, which may only read schema `api`: no writes, no DDL, no
-- temporary tables, no functions unless granted.
\set ON_ERROR_STOP on

CREATE SCHEMA IF NOT EXISTS api AUTHORIZATION pgapp;

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgapp_anon') THEN
    CREATE ROLE pgapp_anon NOLOGIN NOINHERIT;
  END IF;
END
$$;
-- PostgREST switches to it (SET ROLE) for requests without a token.
GRANT pgapp_anon TO pgapp;

-- What every role gets by default, taken back: creating objects in
-- `public` (PostgreSQL < 15 grants it), temporary tables, and running
-- functions the owner adds to `api` (grant each one explicitly).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE TEMPORARY ON DATABASE pgapp FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE pgapp REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- Reading `api`, and only that.
REVOKE ALL ON SCHEMA api FROM PUBLIC;
GRANT USAGE ON SCHEMA api TO pgapp_anon;
GRANT SELECT ON ALL TABLES IN SCHEMA api TO pgapp_anon;
ALTER DEFAULT PRIVILEGES FOR ROLE pgapp IN SCHEMA api GRANT SELECT ON TABLES TO pgapp_anon;
