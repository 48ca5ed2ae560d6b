//! Writes the seed inputs of every target to `<dir>/<target>/seed-<n>` (the starting corpus).

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    for t in sluice_server::fuzzing::TARGETS {
        let d = std::path::Path::new(&dir).join(t.name);
        std::fs::create_dir_all(&d)?;
        for (i, s) in (t.seeds)().iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), s)?;
        }
    }
    Ok(())
}
