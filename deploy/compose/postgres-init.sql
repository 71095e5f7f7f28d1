-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d).
--
-- One role and one database per service: each service owns its store and no service can read
-- another's tables (the architecture's first rule), so CONNECT is also taken away from PUBLIC.
-- The passwords are for this local stack only; the URLs in docker-compose.yml match them.

CREATE ROLE identity LOGIN PASSWORD 'identity-local';
CREATE DATABASE identity OWNER identity;
REVOKE ALL ON DATABASE identity FROM PUBLIC;

CREATE ROLE metering LOGIN PASSWORD 'metering-local';
CREATE DATABASE metering OWNER metering;
REVOKE ALL ON DATABASE metering FROM PUBLIC;

CREATE ROLE orderbook LOGIN PASSWORD 'orderbook-local';
CREATE DATABASE orderbook OWNER orderbook;
REVOKE ALL ON DATABASE orderbook FROM PUBLIC;

CREATE ROLE settlement LOGIN PASSWORD 'settlement-local';
CREATE DATABASE settlement OWNER settlement;
REVOKE ALL ON DATABASE settlement FROM PUBLIC;

CREATE ROLE ledger_adapter LOGIN PASSWORD 'ledger-adapter-local';
CREATE DATABASE ledger_adapter OWNER ledger_adapter;
REVOKE ALL ON DATABASE ledger_adapter FROM PUBLIC;
