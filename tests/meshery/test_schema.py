"""The schema is Meshery's snapshot A, exactly; additions only add.

``SNAPSHOT_A`` is the reference notes' SDL for snapshot A (docs: the shared
``meshery-api.md`` sections 2.1, 2.2 and 3.1, plus the section 2.4 legacy types
that 3.1 says snapshot A still uses), with comments dropped. It is parsed
independently of the packaged schema and compared signature by signature.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from graphql import (
    DirectiveLocation,
    GraphQLEnumType,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    graphql_sync,
    parse,
    print_type,
)
from graphql.language import (
    DirectiveDefinitionNode,
    EnumTypeDefinitionNode,
    FieldDefinitionNode,
    InputObjectTypeDefinitionNode,
    InputValueDefinitionNode,
    ObjectTypeDefinitionNode,
    ScalarTypeDefinitionNode,
    print_ast,
)

from meshsub_trio import Context
from meshsub_trio.meshery import LOCAL_USER, create_app
from meshsub_trio.meshery._api._schema import build_meshery_schema

SNAPSHOT_A = """
scalar Map
scalar Time
scalar Any
directive @KubernetesMiddleware on FIELD_DEFINITION
type Subscription {
  subscribePerfProfiles(selector: PageFilter!): PerfPageProfiles!
  subscribePerfResults(selector: PageFilter!, profileID: String!): PerfPageResult!
  subscribeMesheryControllersStatus(connectionIDs: [String!]): [MesheryControllersStatusListItem!]! @KubernetesMiddleware
  subscribeConfiguration(patternSelector: PageFilter!, filterSelector: PageFilter!): ConfigurationPage!
  subscribeClusterResources(k8scontextIDs: [String!], namespace: String!): ClusterResources!
  subscribeK8sContext(selector: PageFilter!): K8sContextsPage!
  subscribeMeshModelSummary(selector: MeshModelSummarySelector!): MeshModelSummary!
  subscribeEvents: Event!
}
input PageFilter {
  page: String!
  pageSize: String!
  order: String
  search: String
  from: String
  to: String
  updated_after: String
  visibility: [String!]
  metrics: String
}
input MeshModelSummarySelector {
  type: String!
}
type PerfPageProfiles {
  page: Int!
  page_size: Int!
  total_count: Int!
  profiles: [PerfProfile]
}
type PerfProfile {
  concurrent_request: Int!
  created_at: String
  duration: String!
  endpoints: [String]
  id: String!
  last_run: String
  load_generators: [String]
  name: String
  qps: Int
  total_results: Int
  updated_at: String
  user_id: String!
  request_headers: String
  request_cookies: String
  request_body: String
  content_type: String
  service_mesh: String
  metadata: Map
}
type PerfPageResult {
  page: Int!
  page_size: Int!
  total_count: Int!
  results: [MesheryResult]
}
type MesheryResult {
  meshery_id: String
  name: String
  mesh: String
  performance_profile: String
  test_id: String
  runner_results: Map
  server_metrics: String
  server_board_config: String
  test_start_time: String
  user_id: String
  updated_at: String
  created_at: String
}
type MesheryControllersStatusListItem {
  connectionID: String!
  controller: MesheryController!
  status: MesheryControllerStatus!
  version: String!
}
enum MesheryController {
  BROKER
  OPERATOR
  MESHSYNC
}
enum MesheryControllerStatus {
  DEPLOYED
  NOTDEPLOYED
  DEPLOYING
  UNKOWN
  UNDEPLOYED
  ENABLED
  RUNNING
  CONNECTED
}
type ConfigurationPage {
  applications: ApplicationPage
  patterns: PatternPageResult
  filters: FilterPage
}
type ApplicationPage {
  page: Int!
  page_size: Int!
  total_count: Int!
  applications: [ApplicationResult]
}
type ApplicationResult {
  id: ID!
  name: String!
  application_file: String!
  type: NullString!
  user_id: String!
  location: Location!
  visibility: String!
  created_at: String
  updated_at: String
}
type NullString {
  String: String!
  Valid: Boolean!
}
type Location {
  branch: String
  host: String
  path: String
  type: String
}
type PatternPageResult {
  page: Int!
  page_size: Int!
  total_count: Int!
  patterns: [PatternResult]
}
type PatternResult {
  id: ID!
  name: String!
  user_id: String!
  location: Location!
  pattern_file: String!
  visibility: String!
  catalog_data: Map
  canSupport: Boolean!
  errmsg: String
  created_at: String
  updated_at: String
  type: NullString
}
type FilterPage {
  page: Int!
  page_size: Int!
  total_count: Int!
  filters: [FilterResult]
}
type FilterResult {
  id: ID!
  name: String!
  filter_file: String!
  filter_resource: String!
  user_id: String!
  location: Location!
  visibility: String!
  catalog_data: Map
  created_at: String
  updated_at: String
}
type ClusterResources {
  resources: [Resource!]!
}
type Resource {
  kind: String!
  count: Int!
}
type K8sContextsPage {
  total_count: Int!
  contexts: [K8sContext]!
}
type K8sContext {
  id: String!
  name: String!
  server: String!
  owner: ID!
  created_by: ID!
  meshery_instance_id: ID!
  kubernetes_server_id: ID!
  deployment_type: String!
  version: String!
  updated_at: String!
  created_at: String!
  connection_id: String!
}
type MeshModelSummary {
  components: [MeshModelComponent!]
  relationships: [MeshModelRelationship!]
}
type MeshModelComponent {
  name: String!
  count: Int!
}
type MeshModelRelationship {
  name: String!
  count: Int!
}
type Event {
  id: ID!
  userID: ID!
  actedUpon: ID!
  operationID: ID!
  systemID: ID!
  severity: Severity!
  action: String!
  status: String!
  category: String!
  description: String!
  metadata: Map
  createdAt: Time!
  updatedAt: Time!
  deletedAt: Time
}
enum Severity {
  alert
  critical
  debug
  emergency
  error
  warning
  informational
}
type MeshSyncEvent {
  type: String!
  object: Any!
  connectionID: String!
}
enum MeshSyncEventType {
  ADDED
  MODIFIED
  DELETED
}
type Query {
  getAvailableAddons(filter: ServiceMeshFilter): [AddonList!]!
  getControlPlanes(filter: ServiceMeshFilter): [ControlPlane!]!
  getDataPlanes(filter: ServiceMeshFilter): [DataPlane!]!
  getOperatorStatus(connectionID: String!): MesheryControllersStatusListItem @KubernetesMiddleware
  resyncCluster(selector: ReSyncActions, k8scontextID: String!): Status! @KubernetesMiddleware
  getMeshsyncStatus(connectionID: String!): OperatorControllerStatus!
  getNatsStatus(connectionID: String!): OperatorControllerStatus!
  getAvailableNamespaces(k8sClusterIDs: [String!]): [NameSpace!]!
  getPerfResult(id: ID!): MesheryResult
  fetchResults(selector: PageFilter!, profileID: String!): PerfPageResult!
  getPerformanceProfiles(selector: PageFilter!): PerfPageProfiles!
  fetchAllResults(selector: PageFilter!): PerfPageResult!
  fetchPatterns(selector: PageFilter!): PatternPageResult!
  getKubectlDescribe(name: String!, kind: String!, namespace: String!): KctlDescribeDetails!
  fetchPatternCatalogContent(selector: CatalogSelector): [CatalogPattern!]!
  fetchFilterCatalogContent(selector: CatalogSelector): [CatalogFilter!]!
  getMeshModelSummary(selector: MeshModelSummarySelector!): MeshModelSummary!
  fetchTelemetryComponents(contexts: [String!]): [TelemetryComp]!
}
type Mutation {
  changeOperatorStatus(input: OperatorStatusInput): Status! @KubernetesMiddleware
  changeAdapterStatus(input: AdapterStatusInput): Status! @KubernetesMiddleware
}
input OperatorStatusInput { targetStatus: Status! contextID: String! }
input AdapterStatusInput { targetStatus: Status! targetPort: String! adapter: String! }
input AddonStatusInput { selector: MeshType k8scontextID: String! targetStatus: Status! }
input ReSyncActions { clearDB: String! ReSync: String! hardReset: String! }
input CatalogSelector { page: String! pagesize: String! search: String! order: String! metrics: String class: [String] technology: [String] patternType: [String] }
type OperatorControllerStatus { name: String! version: String! status: Status! error: Error connectionID: String! }
type NameSpace { namespace: String! }
type KctlDescribeDetails { describe: String ctxid: String }
type TelemetryComp { name: String! spec: String! status: String! }
type CatalogPattern { id: ID! name: String! user_id: String! pattern_file: String! location: Location! visibility: String! catalog_data: Map created_at: String updated_at: String }
type CatalogFilter { id: ID! name: String! filter_file: String! user_id: String! location: Location! filter_resource: String! visibility: String! catalog_data: Map created_at: String updated_at: String }
enum Status { ENABLED CONNECTED DISABLED PROCESSING UNKNOWN }
type Error { code: String! description: String! }
input ServiceMeshFilter { type: MeshType k8sClusterIDs: [String!] }
type AddonList { name: String! owner: String! }
type ControlPlane { name: String! members: [ControlPlaneMember!]! }
type ControlPlaneMember { name: String! component: String! version: String! namespace: String! data_planes: [Container!] }
type DataPlane { name: String! proxies: [Container!]! }
type Container { controlPlaneMemberName: String! containerName: String! image: String! status: Container_Status ports: [Container_Port] resources: Any }
type Container_Status { containerStatusName: String! image: String! state: Any lastState: Any ready: Boolean! restartCount: Any started: Boolean! imageID: Any containerID: Any }
type Container_Port { name: String containerPort: Int! protocol: String! }
enum MeshType { ALL_MESH INVALID_MESH APP_MESH CITRIX_SERVICE_MESH CONSUL ISTIO KUMA LINKERD
  TRAEFIK_MESH OCTARINE NETWORK_SERVICE_MESH TANZU OPEN_SERVICE_MESH NGINX_SERVICE_MESH
  CILIUM_SERVICE_MESH }
"""

#: Types meshsub-trio adds (inputs for its feeding mutations); nothing else is new.
ADDED_TYPES = {
    "EventInput",
    "PerformanceProfileInput",
    "PerfResultInput",
    "LocationInput",
    "PatternInput",
    "FilterInput",
    "K8sContextInput",
    "ControllerStatusInput",
    "ClusterResourceInput",
    "MeshModelEntityInput",
}

SUBSCRIPTIONS = [
    "subscribePerfProfiles",
    "subscribePerfResults",
    "subscribeMesheryControllersStatus",
    "subscribeConfiguration",
    "subscribeClusterResources",
    "subscribeK8sContext",
    "subscribeMeshModelSummary",
    "subscribeEvents",
]


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_meshery_schema()


def _reference_definitions() -> dict[str, object]:
    return {
        d.name.value: d
        for d in parse(SNAPSHOT_A).definitions
        if hasattr(d, "name") and d.name is not None
    }


def _signature(node: FieldDefinitionNode | InputValueDefinitionNode) -> str:
    """The field's printed SDL: name, arguments, type, default and directives."""
    return " ".join(print_ast(node).split())


def _ours(schema: GraphQLSchema, name: str) -> dict[str, str]:
    graphql_type = schema.get_type(name)
    assert graphql_type is not None, f"schema lacks {name}"
    node = graphql_type.ast_node
    fields = list(node.fields or ()) if hasattr(node, "fields") else []
    for extension in graphql_type.extension_ast_nodes:
        fields += list(extension.fields or ())
    return {field.name.value: _signature(field) for field in fields}


def test_reference_parses_and_covers_every_subscription() -> None:
    definitions = _reference_definitions()
    subscription = definitions["Subscription"]
    assert [f.name.value for f in subscription.fields] == SUBSCRIPTIONS


@pytest.mark.parametrize("name", sorted(_reference_definitions()))
def test_every_snapshot_a_type_matches_exactly(schema: GraphQLSchema, name: str) -> None:
    reference = _reference_definitions()[name]
    if isinstance(reference, DirectiveDefinitionNode):
        ours_directive = schema.get_directive(name)
        assert ours_directive is not None
        assert print_ast(ours_directive.ast_node) == print_ast(reference)
        return
    if isinstance(reference, ScalarTypeDefinitionNode):
        assert isinstance(schema.get_type(name), GraphQLScalarType)
        return
    if isinstance(reference, EnumTypeDefinitionNode):
        ours = schema.get_type(name)
        assert isinstance(ours, GraphQLEnumType)
        assert list(ours.values) == [v.name.value for v in reference.values]
        return
    assert isinstance(reference, ObjectTypeDefinitionNode | InputObjectTypeDefinitionNode)
    expected = {f.name.value: _signature(f) for f in reference.fields}
    ours = _ours(schema, name)
    if name == "Mutation":
        # Meshery's mutations are kept as they are; ours are extra fields.
        assert {k: ours[k] for k in expected if k in ours} == expected
        assert list(ours)[: len(expected)] == list(expected)
    else:
        assert ours == expected
        assert list(ours) == list(expected), "field order differs from snapshot A"


def test_subscription_signatures_verbatim(schema: GraphQLSchema) -> None:
    text = print_type(schema.subscription_type)
    assert "subscribeMesheryControllersStatus(connectionIDs: [String!]): " in text
    assert "[MesheryControllersStatusListItem!]! @KubernetesMiddleware" in print_ast(
        schema.subscription_type.fields["subscribeMesheryControllersStatus"].ast_node
    )
    assert "subscribeClusterResources(k8scontextIDs: [String!], namespace: String!): " in text
    assert "subscribeEvents: Event!" in text
    assert list(schema.subscription_type.fields) == SUBSCRIPTIONS


def test_no_argument_or_input_field_has_a_default(schema: GraphQLSchema) -> None:
    for graphql_type in schema.type_map.values():
        if graphql_type.name.startswith("__"):
            continue
        if isinstance(graphql_type, GraphQLObjectType):
            for field in graphql_type.fields.values():
                for arg in field.args.values():
                    assert arg.default_value is None or arg.default_value.__class__.__name__ == (
                        "UndefinedType"
                    ), arg
        if isinstance(graphql_type, GraphQLInputObjectType):
            for field in graphql_type.fields.values():
                assert field.ast_node is None or field.ast_node.default_value is None


def test_only_additions_beyond_snapshot_a(schema: GraphQLSchema) -> None:
    reference = set(_reference_definitions())
    reference.discard("KubernetesMiddleware")
    ours = {name for name in schema.type_map if not name.startswith("__")}
    builtins = {"String", "Boolean", "Int", "Float", "ID"}
    assert ours - reference - builtins == ADDED_TYPES
    assert reference - ours == set()
    assert list(schema.query_type.fields) == [
        f.name.value for f in _reference_definitions()["Query"].fields
    ]


def test_controller_status_enum_keeps_the_misspelling(schema: GraphQLSchema) -> None:
    status = schema.get_type("MesheryControllerStatus")
    assert list(status.values) == [
        "DEPLOYED", "NOTDEPLOYED", "DEPLOYING", "UNKOWN", "UNDEPLOYED", "ENABLED", "RUNNING",
        "CONNECTED",
    ]  # fmt: skip
    assert "UNKNOWN" not in status.values
    assert list(schema.get_type("MesheryController").values) == ["BROKER", "OPERATOR", "MESHSYNC"]


def test_severity_values_are_lower_case_and_exclude_success(schema: GraphQLSchema) -> None:
    severity = schema.get_type("Severity")
    assert list(severity.values) == [
        "alert", "critical", "debug", "emergency", "error", "warning", "informational",
    ]  # fmt: skip
    assert "success" not in severity.values


def test_kubernetes_middleware_directive_is_declared_and_applied(schema: GraphQLSchema) -> None:
    directive = schema.get_directive("KubernetesMiddleware")
    assert directive is not None
    assert list(directive.locations) == [DirectiveLocation.FIELD_DEFINITION]
    assert directive.args == {}
    tagged = sorted(
        f"{t.name}.{name}"
        for t in (schema.query_type, schema.mutation_type, schema.subscription_type)
        for name, field in t.fields.items()
        if field.ast_node is not None and field.ast_node.directives
    )
    assert tagged == [
        "Mutation.changeAdapterStatus",
        "Mutation.changeOperatorStatus",
        "Query.getOperatorStatus",
        "Query.resyncCluster",
        "Subscription.subscribeMesheryControllersStatus",
    ]


def test_each_app_gets_its_own_schema_objects() -> None:
    first, second = create_app(simulator=False), create_app(simulator=False)
    assert first.schema is not second.schema
    assert first.schema.get_type("Event") is not second.schema.get_type("Event")


# ---- scalars ------------------------------------------------------------------


def test_time_serialises_to_rfc3339(schema: GraphQLSchema) -> None:
    time = schema.get_type("Time")
    moment = datetime(2024, 5, 1, 14, 30, 5, 120000, tzinfo=timezone(timedelta(hours=2)))
    assert time.coerce_output_value(moment) == "2024-05-01T12:30:05.120000Z"
    assert time.coerce_output_value("2024-05-01T12:30:05Z") == "2024-05-01T12:30:05Z"
    assert time.coerce_output_value(datetime(2024, 5, 1)) == "2024-05-01T00:00:00.000000Z"
    with pytest.raises(GraphQLError, match="RFC 3339"):
        time.coerce_output_value("yesterday")
    with pytest.raises(GraphQLError):
        time.coerce_output_value(12)


def test_time_parses_rfc3339_input(schema: GraphQLSchema) -> None:
    time = schema.get_type("Time")
    assert time.coerce_input_value("2024-05-01T12:00:00+02:00") == datetime(
        2024, 5, 1, 10, tzinfo=UTC
    )
    with pytest.raises(GraphQLError):
        time.coerce_input_value("2024-05-01T12:00:00")  # no zone


def test_map_is_a_json_object(schema: GraphQLSchema) -> None:
    map_type = schema.get_type("Map")
    assert map_type.coerce_output_value({"a": [1, {"b": None}]}) == {"a": [1, {"b": None}]}
    for bad in ([1, 2], "text", {1: "int key"}, {"x": object()}, {"x": float("nan")}):
        with pytest.raises(GraphQLError):
            map_type.coerce_output_value(bad)


def test_any_is_any_json_value(schema: GraphQLSchema) -> None:
    any_type = schema.get_type("Any")
    for good in (1, "x", None, [1, "a"], {"k": [True]}, 1.5):
        assert any_type.coerce_output_value(good) == good
    with pytest.raises(GraphQLError):
        any_type.coerce_output_value({1, 2})


def test_map_literals_must_be_objects() -> None:
    app = create_app(simulator=False)
    good = graphql_sync(
        app.schema,
        'mutation { publishEvent(input: {severity: debug, description: "d", '
        "metadata: {a: [1, 2], b: {c: true}}}) { metadata } }",
        context_value=_local_context(),
    )
    assert good.errors is None
    assert good.data == {"publishEvent": {"metadata": {"a": [1, 2], "b": {"c": True}}}}
    bad = graphql_sync(
        app.schema,
        'mutation { publishEvent(input: {severity: debug, description: "d", metadata: [1]}) '
        "{ id } }",
        context_value=_local_context(),
    )
    assert bad.errors and "Map" in bad.errors[0].message


def _local_context() -> Context:
    return Context(auth=LOCAL_USER)
