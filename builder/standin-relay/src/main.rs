//! `eci-standin-relay --listen ADDR:PORT --peer IP --to SOCKET` (see the library).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match eci_standin_relay::parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("eci-standin-relay: {e}\nusage: eci-standin-relay --listen ADDR:PORT --peer IP --to SOCKET");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match std::net::TcpListener::bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("eci-standin-relay: cannot listen on {}: {e}", config.listen);
            return std::process::ExitCode::from(1);
        }
    };
    eprintln!(
        "eci-standin-relay: {} (from {} only) -> {}",
        config.listen,
        config.peer,
        config.target.display()
    );
    if let Err(e) = eci_standin_relay::serve(listener, config.peer, &config.target) {
        eprintln!("eci-standin-relay: {e}");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}
