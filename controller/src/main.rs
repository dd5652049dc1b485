fn main() {
    eprintln!("ferrolb-controller: not implemented yet");
    std::process::exit(1);
}
