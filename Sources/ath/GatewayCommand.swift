import ATHGateway
import ArgumentParser
import Foundation
import UnixSignals

/// `ath gateway --config FILE`: what a platform runs in front of its services.
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run the ATH gateway in front of unchanged services (docs/GATEWAY.md).",
        discussion: """
            Every key of the file can be overridden by the environment (gateway.public_url: GATEWAY_PUBLIC_URL) \
            and by --set key=value. The configuration is checked in full before anything listens.
            """)

    @OptionGroup var options: GatewayOptions

    func run() async throws { try await options.run(mode: .proxy) }
}

/// `ath authz --config FILE`: the gateway's check for nginx `auth_request` and Envoy.
struct AuthzCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authz",
        abstract: "Answer nginx auth_request and Envoy external authorization with the gateway's check (docs/GATEWAY.md).",
        discussion: """
            Reads the same file as `ath gateway`. The handshake, the consent console and the v0.1 API are served on \
            gateway.listen (your proxy routes /ath/ to it); the checks on authz.listen (default 127.0.0.1:9191), which \
            only the proxy may reach. Examples/Gateway/nginx.conf is a tested nginx configuration.
            """)

    @OptionGroup var options: GatewayOptions

    func run() async throws { try await options.run(mode: .externalAuthorization) }
}

struct GatewayOptions: ParsableArguments {
    @Option(help: "The configuration file (.yaml, .yml or .json), e.g. Examples/Gateway/gateway.yaml.") var config: String
    @Option(name: .customLong("set"), help: "Override one key: --set gateway.listen.port=9443 (repeatable; lists comma-separated).")
    var overrides: [String] = []
    @Flag(help: "Check the configuration and its files, print what would run, and exit.") var check = false
    @OptionGroup var executor: ExecutorOptions

    func run(mode: Gateway.Mode) async throws {
        let configuration: GatewayConfiguration
        do {
            configuration = try await GatewayConfiguration.load(file: config, overrides: overrides)
        } catch let error as GatewayConfigurationError {
            throw ValidationError("configuration: \(error)")
        }
        for service in configuration.services {
            let at = service.protocol == .ath ? "/\(service.name)/" : "/ath/proxy/\(service.name)/"
            print("service \(service.name) (\(service.protocol.rawValue)): \(at) -> \(service.upstream.baseURL), \(service.operations.routes.count) routes")
        }
        if check {
            print("configuration \(config) is valid")
            return
        }
        executor.apply()
        let gateway: Gateway
        do {
            gateway = try await Gateway.start(configuration, mode: mode)
        } catch let error as GatewayConfigurationError {
            throw ValidationError("configuration: \(error)")
        }
        print("gateway \(configuration.serverDID) listening on \(gateway.baseURL) as \(configuration.publicURL) (store \(configuration.store.description))")
        if let authz = gateway.authz { print("external authorization (nginx, Envoy) on \(authz.baseURL)/ath/authz/") }
        fflush(nil)
        // SIGHUP: read the file (and --set) again and apply what a reload can (Gateway.reload);
        // anything else keeps the configuration in force and says why.
        for await signal in await UnixSignalsSequence(trapping: .sigint, .sigterm, .sighup) {
            guard signal == .sighup else {
                print("\(signal): stopping")
                break
            }
            do {
                let new = try await GatewayConfiguration.load(file: config, overrides: overrides)
                try gateway.reload(new)
                print("SIGHUP: reloaded \(config): \(new.services.count) services")
            } catch {
                print("SIGHUP: reload refused, the previous configuration stays in force: \(error)")
            }
            fflush(nil)
        }
        await gateway.stop()
    }
}
