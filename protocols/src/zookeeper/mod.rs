//! ZooKeeper / ClickHouse Keeper client protocol (2181, 9181): passive parser producing one
//! record per request, paired with its reply by xid.
