/*
 * nadi 1.0 → 1.1 — upgrade script.  A fresh CREATE EXTENSION nadi runs
 * nadi--1.0.sql and then this file (there is no nadi--1.1.sql), so an
 * upgraded database and a new one are built by the same statements.
 *
 * 1.1: tool names are identifiers (SQLSTATE NA013), host logins are bound
 * to the host ids an administrator names (nadi.host_bindings), placement
 * labels are set by administrators, and sandboxd tokens are per session.
 */
\echo Use "ALTER EXTENSION nadi UPDATE TO '1.1'" to load this file. \quit
