fn main() {
    eprintln!("ferrolb-speaker: not implemented yet");
    std::process::exit(1);
}
