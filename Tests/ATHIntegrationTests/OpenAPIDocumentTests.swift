import ATHCore
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
        get throws {
            let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/openapi.json").standardizedFileURL
            return try JSONValue.parse(try Data(contentsOf: url))
        }
    }

    @Test func everyRouteIsDescribedAndEveryDescriptionIsARoute() async throws {
        let h = try await Harness.start()
        let router = ShoppingPlatform.router(service: h.service, channels: h.channels)
        AdminRoutes<ATHRequestContext>(service: h.service, adminToken: "unused").register(on: router)
        let served = Set(router.routes.map { "\($0.method.rawValue) \($0.path.description)" })
        guard case .object(let paths)? = try Self.document["paths"] else {
            Issue.record("docs/openapi.json has no paths")
            return await h.stop()
        }
        var described: Set<String> = []
        for (path, item) in paths {
            guard case .object(let operations) = item else { continue }
            // Hummingbird describes a parameter as OpenAPI writes it: {name}.
            for method in operations.keys { described.insert("\(method.uppercased()) \(path)") }
        }
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
