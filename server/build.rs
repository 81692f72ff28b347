//! Rebuild when a migration changes: `sqlx::migrate!` embeds the files at compile time,
//! and cargo would not otherwise notice edits to them.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
