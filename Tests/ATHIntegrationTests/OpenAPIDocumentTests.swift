import ATHCore
@testable import ATHGateway
import ATHServer
import Foundation
import Hummingbird
import ShoppingExample
import Testing

/// docs/openapi.json describes exactly the routes the server registers: the example platform
/// (handshake, user API, renewal, session layer, console, its API) and the admin API. A route
/// added without its description, or a description left after its route went, fails here.
@Suite struct OpenAPIDocumentTests {
    static var document: JSONValue {
        get throws { try described("openapi.json") }
    }

    static func described(_ name: String) throws -> JSONValue {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/\(name)").standardizedFileURL
        return try JSONValue.parse(try Data(contentsOf: url))
    }

    /// "METHOD /path" for each operation a document describes.
    static func operations(_ document: JSONValue) -> Set<String> {
        guard case .object(let paths)? = document["paths"] else { return [] }
        var described: Set<String> = []
        for (path, item) in paths {
            guard case .object(let operations) = item else { continue }
            for method in operations.keys { described.insert("\(method.uppercased()) \(path)") }
        }
        return described
    }

    /// docs/openapi-gateway.json describes the v0.1 API and the gateway's admin route exactly as
    /// `ath gateway` serves them (the example configuration: an ath and an oauth service, the
    /// admin API); everything else the gateway serves is docs/openapi.json's, or a protected
    /// service's mount.
    @Test func theGatewayDocumentDescribesWhatTheGatewayServes() async throws {
        let upstream = try await MockOAuthProvider.start()
        let gateway = try await Gateway.start(try await GatewayTests.load(try GatewayTests.loopback(upstream: upstream)))
        let served = Set(gateway.mainRoutes.served)
        await gateway.stop()
        await upstream.stop()
        // The proxy is two routes (with and without a path); the document names one, with {path}.
        let proxy = served.filter { $0.contains("/ath/proxy/") }
        #expect(proxy.count == 14, "\(proxy.sorted())")
        let routes = served.subtracting(proxy).union(proxy.compactMap { $0.hasSuffix("/**") ? $0.dropLast(3) + "/{path}" : nil })
        let gatewayDocument = Self.operations(try Self.described("openapi-gateway.json"))
        let mounts = served.filter { $0.split(separator: " ")[1].hasPrefix("/shop") }
        #expect(mounts.count == 14, "seven methods, with and without a path: \(mounts.sorted())")
        let unexplained = routes.subtracting(gatewayDocument).subtracting(Self.operations(try Self.document)).subtracting(mounts)
        #expect(unexplained.isEmpty, "served but not described: \(unexplained.sorted())")
        #expect(gatewayDocument.subtracting(routes).isEmpty, "described but not served: \(gatewayDocument.subtracting(routes).sorted())")
    }

    @Test func everyRouteIsDescribedAndEveryDescriptionIsARoute() async throws {
        let h = try await Harness.start()
        let router = ShoppingPlatform.router(service: h.service, channels: h.channels)
        AdminRoutes<ATHRequestContext>(service: h.service, adminToken: "unused").register(on: router)
        let served = Set(router.routes.map { "\($0.method.rawValue) \($0.path.description)" })
        // Hummingbird describes a parameter as OpenAPI writes it: {name}.
        let described = Self.operations(try Self.document)
        #expect(!described.isEmpty, "docs/openapi.json has no paths")
        #expect(served.subtracting(described).isEmpty, "served but not described: \(served.subtracting(described).sorted())")
        #expect(described.subtracting(served).isEmpty, "described but not served: \(described.subtracting(served).sorted())")
        await h.stop()
    }

    /// Every operation answers refusals with the documented error shape, and names 500.
    @Test func everyOperationDescribesItsErrors() throws {
        guard case .object(let paths)? = try Self.document["paths"] else { Issue.record("no paths"); return }
        for (path, item) in paths {
            guard case .object(let operations) = item else { continue }
            for (method, operation) in operations where !path.hasPrefix("/ath/console/console.") && path != "/ath/console" {
                guard case .object(let responses)? = operation["responses"] else { Issue.record("\(method) \(path): no responses"); continue }
                #expect(responses["500"] != nil, "\(method) \(path) does not name 500")
                for (status, response) in responses where status.hasPrefix("4") || status.hasPrefix("5") {
                    #expect(response["$ref"] == "#/components/responses/Error", "\(method) \(path) \(status)")
                }
            }
        }
    }
}
