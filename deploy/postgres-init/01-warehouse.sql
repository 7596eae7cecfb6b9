-- Runs once, when the postgres volume is first created (docker-entrypoint-initdb.d), as
-- POSTGRES_USER in POSTGRES_DB (chordload_meta, the metadata database; `migrate` creates its
-- tables). This adds the demo warehouse: a source table src.customers and the dw schema that
-- the demo mapping loads into.
CREATE DATABASE warehouse;
\connect warehouse
CREATE SCHEMA src;
CREATE SCHEMA dw;
CREATE TABLE src.customers (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    city       text,
    balance    numeric(12, 2),
    updated_at timestamp NOT NULL
);
INSERT INTO src.customers
SELECT g, 'Customer ' || g, 'c' || g || '@example.com',
       (ARRAY['Berlin', 'Lisbon', 'Oslo', 'Turin', 'Gdansk'])[1 + g % 5],
       round((g % 1000) * 1.25, 2),
       TIMESTAMP '2026-01-01' + g * INTERVAL '1 second'
FROM generate_series(1, 250000) g;
CREATE INDEX ON src.customers (updated_at);
ANALYZE src.customers;
