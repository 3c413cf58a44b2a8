import ArgumentParser

/// `custos bench ...`: measurements of the vault's hot paths against their raw primitives.
struct Bench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure the vault's hot paths against the raw primitives they are made of.",
    subcommands: [BenchSign.self])
}
