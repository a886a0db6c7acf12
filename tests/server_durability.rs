//! `kill -9` of `nodectl server` under a steady write load over HTTPS loses no acknowledged
//! write (SQLite here; etcd in tests/store_etcd.rs, with the same check).

mod common;

#[test]
fn kill_9_of_the_server_under_load_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    common::server::kill_9_under_load_loses_no_acknowledged_write(&tmp.path().join("data"), &[]);
}
