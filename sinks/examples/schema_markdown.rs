//! Prints the Markdown tables of `sinks/README.md` (section "Tables") from the schema
//! definitions: `cargo run -p l7tap-sinks --example schema_markdown`.
use l7tap_sinks::Table;

fn main() {
    for table in Table::ALL {
        println!("### `{}`\n", table.name());
        println!("| column | type | null | description |");
        println!("| --- | --- | --- | --- |");
        for spec in table.columns() {
            println!(
                "| `{}` | {} | {} | {} |",
                spec.name,
                spec.column_type.readme_name(),
                if spec.nullable { "yes" } else { "no" },
                spec.description.replace('|', "\\|")
            );
        }
        println!();
    }
}
