#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "api_pki.hpp"
#include "devcert/operations.hpp"

using namespace devcert;
using namespace devcert::test;
using namespace std::chrono_literals;

namespace {

const Caller ops = named_caller(1000, "ops", {"ops", "mqtt-admins"});
const Caller viewer = named_caller(1001, "viewer", {"viewer"});
const Caller stranger = named_caller(4242, "", {});

constexpr const char* kPolicy = R"({"Version": "1", "Statement": [
  {"Effect": "Allow", "Principal": {"group": ["mqtt-admins"]}, "Action": ["mq:*"], "Resource": ["local"]},
  {"Effect": "Deny", "Principal": {"user": ["ops"]}, "Action": "mq:Delete*", "Resource": "*"},
  {"Effect": "Allow", "Principal": {"user": ["viewer"]}, "Action": ["mq:Get*", "mq:List*"], "Resource": ["local"]},
  {"Effect": "Allow", "Principal": {"uid": [4242]}, "Action": "mq:*", "Resource": "elsewhere"}
]})";

Params inactivate(const std::string& instance = "local", const std::string& device = "0d01") {
    return {{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", instance}, {"CaSn", "0a01"}, {"DeviceSn", device}};
}

}  // namespace

TEST_CASE("the policy lets a caller do what an Allow grants on this instance", "[api][access]") {
    ApiFixture f(kPolicy);
    CHECK(f.call(inactivate(), ops).code() == "FindDeviceBySnError");  // allowed: reached the store
    CHECK(f.call({{"Action", "GetStats"}, {"MqttInstanceId", "local"}}, viewer).status == 200);
}

TEST_CASE("a caller without an Allow for the permission is PermissionCheckFailed", "[api][access]") {
    ApiFixture f(kPolicy);
    const auto reply = f.call(inactivate(), viewer);
    CHECK(reply.status == 403);
    CHECK(reply.code() == "PermissionCheckFailed");
}

TEST_CASE("an explicit Deny wins over the group's Allow", "[api][access]") {
    ApiFixture f(kPolicy);
    const auto reply = f.call(device_call("DeleteDeviceCertificate", "0a01", "0d01"), ops);
    CHECK(reply.status == 403);
    CHECK(reply.code() == "PermissionCheckFailed");
}

TEST_CASE("a caller whose identity lookup failed is refused whatever the policy allows, audited once",
          "[api][access]") {
    ApiFixture f(kPolicy);
    Caller partial = ops;  // in mqtt-admins, which may do everything here
    partial.groups = {"ops"};
    partial.lookup_error = "group lookup for gid 2000 failed: Input/output error";
    const auto before = f.audit().size();
    const auto reply = f.call({{"Action", "GetStats"}, {"MqttInstanceId", "local"}}, partial);
    CHECK(reply.status == 403);
    CHECK(reply.code() == "PermissionCheckFailed");
    CHECK(reply.body.at("Detail") == "group lookup for gid 2000 failed: Input/output error");
    const auto lines = f.audit();
    REQUIRE(lines.size() == before + 1);
    CHECK(lines.back().find("uid=1000(ops) | GetStats | - | error PermissionCheckFailed (group lookup for gid 2000 "
                            "failed: Input/output error)") != std::string::npos);
    CHECK(f.counters.admin_calls("GetStats", "PermissionCheckFailed") == 1);
}

TEST_CASE("a caller allowed only on another instance is MqttOwnerCheckError", "[api][access]") {
    ApiFixture f(kPolicy);
    const auto reply = f.call(inactivate(), stranger);
    CHECK(reply.status == 403);
    CHECK(reply.code() == "MqttOwnerCheckError");
}

TEST_CASE("a caller the policy does not name is refused", "[api][access]") {
    ApiFixture f(kPolicy);
    const auto nobody = named_caller(5555, "", {});
    CHECK(f.call({{"Action", "GetStats"}, {"MqttInstanceId", "local"}}, nobody).code() == "PermissionCheckFailed");
}

TEST_CASE("without a policy file root and the process's own uid may call, others not", "[api][access]") {
    ApiFixture f;
    const Params stats{{"Action", "GetStats"}, {"MqttInstanceId", "local"}};
    CHECK(f.call(stats, root_caller()).status == 200);
    CHECK(f.call(stats, named_caller(::geteuid(), "me", {})).status == 200);
    const uid_t other = ::geteuid() == 0 ? 4242 : ::geteuid() + 1;
    CHECK(f.call(stats, named_caller(other, "someone", {})).code() == "PermissionCheckFailed");
}

TEST_CASE("a policy file that does not parse stops Api::create naming the file and line", "[api][access]") {
    TempDir dir;
    const auto path = dir.write("policy.json", "{\n  \"Statement\": [\n    {\"Effect\": \"Allow\"\n    \"Action\": \"mq:*\"}\n  ]\n}\n");
    PluginConfig config;
    config.admin_policy = path;
    StoreOptions options;
    options.path = dir.file("store");
    auto store = Store::open(options);
    REQUIRE(store.ok());
    AdminContext context;
    context.store = store->get();
    context.config = &config;
    auto api = Api::create(context);
    REQUIRE_FALSE(api.ok());
    CHECK_THAT(api.error().message, Catch::Contains(path) && Catch::Contains("line 4"));
}

TEST_CASE("the 501st call within a second from one uid is Throttling.User, another uid is unaffected", "[api][access]") {
    ApiFixture f;
    const Params stats{{"Action", "GetStats"}, {"MqttInstanceId", "local"}};
    const auto me = named_caller(::geteuid(), "me", {});
    for (int i = 0; i < 500; ++i) REQUIRE(f.call(stats, me).status == 200);
    const auto refused = f.call(stats, me);
    CHECK(refused.status == 429);
    CHECK(refused.code() == "Throttling.User");
    REQUIRE(refused.retry_after_s.has_value());
    CHECK(*refused.retry_after_s >= 1);
    const uid_t other_uid = ::geteuid() == 0 ? 4242 : 0;
    // Another uid has its own bucket (it is refused by the policy, not throttled).
    CHECK(f.call(stats, named_caller(other_uid, "", {})).code() != "Throttling.User");
    f.now += 1s;
    CHECK(f.call(stats, me).status == 200);
}

TEST_CASE("checks run in order: rate limit, Action, permission, parameters, instance, instance permission, store",
          "[api][access]") {
    ApiFixture f(kPolicy, 2);
    const Params bad_params{{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", "nope"}, {"CaSn", "zz"}};

    SECTION("a throttled call with bad parameters is Throttling.User") {
        const auto spare = named_caller(1000, "ops", {"mqtt-admins"});
        REQUIRE(f.call(bad_params, spare).code() == "ParameterFieldCheckFailed");
        REQUIRE(f.call(bad_params, spare).code() == "ParameterFieldCheckFailed");
        CHECK(f.call(bad_params, spare).code() == "Throttling.User");
    }
    SECTION("an unknown Action from a caller with no permission is InvalidAction.NotFound") {
        const auto reply = f.call({{"Action", "FrobnicateCertificate"}}, named_caller(5555, "", {}));
        CHECK(reply.status == 404);
        CHECK(reply.code() == "InvalidAction.NotFound");
    }
    SECTION("bad parameters from a caller without the permission are PermissionCheckFailed") {
        CHECK(f.call(bad_params, viewer).code() == "PermissionCheckFailed");
    }
    SECTION("bad parameters with a wrong instance are ParameterFieldCheckFailed") {
        CHECK(f.call(bad_params, ops).code() == "ParameterFieldCheckFailed");
    }
    SECTION("a wrong instance for a caller allowed elsewhere only is MqttInstanceNotFound") {
        const auto reply = f.call(inactivate("nope"), stranger);
        CHECK(reply.status == 500);
        CHECK(reply.code() == "MqttInstanceNotFound");
    }
    SECTION("an instance refusal comes before the store's answer") {
        CHECK(f.call(inactivate("local", "0dff"), stranger).code() == "MqttOwnerCheckError");
    }
}

TEST_CASE("Action missing, unknown or repeated is refused", "[api][access]") {
    ApiFixture f;
    CHECK(f.call({{"MqttInstanceId", "local"}}).code() == "InvalidAction.NotFound");
    CHECK(f.call({{"Action", "getstats"}, {"MqttInstanceId", "local"}}).code() == "InvalidAction.NotFound");
    CHECK(f.call({{"Action", "GetStats"}, {"Action", "GetStats"}, {"MqttInstanceId", "local"}}).code() ==
          "ParameterFieldCheckFailed");
    CHECK(f.counters.admin_calls("unknown", "InvalidAction.NotFound") == 2);
    CHECK(f.counters.admin_calls("GetStats", "ParameterFieldCheckFailed") == 1);
}

TEST_CASE("parameters missing, empty, repeated, unknown or malformed are ParameterFieldCheckFailed", "[api][access]") {
    ApiFixture f;
    const std::vector<Params> cases{
        {{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", "local"}, {"CaSn", "0a01"}},
        {{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", "local"}, {"CaSn", "0a01"}, {"DeviceSn", ""}},
        {{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", "local"}, {"CaSn", "0a01"}, {"DeviceSn", "0d01"}, {"DeviceSn", "0d01"}},
        {{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", "local"}, {"CaSn", "0a01"}, {"DeviceSn", "0d01"}, {"Extra", "1"}},
        {{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", "local"}, {"CaSn", "0a01"}, {"DeviceSn", "0g01"}},
        {{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", "local"}, {"CaSn", std::string(129, 'a')}, {"DeviceSn", "0d01"}},
        {{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", ""}, {"CaSn", "0a01"}, {"DeviceSn", "0d01"}},
    };
    for (const auto& params : cases) {
        const auto reply = f.call(params);
        CHECK(reply.status == 400);
        CHECK(reply.code() == "ParameterFieldCheckFailed");
        CHECK(reply.body.at("Message") == "Failed to validate the parameters. The parameters may be missing or invalid.");
        CHECK(reply.body.contains("Detail"));
    }
    CHECK(f.call(inactivate("elsewhere")).code() == "MqttInstanceNotFound");
}

TEST_CASE("every call is counted and audited once, in the fixed shape", "[api][access]") {
    ApiFixture f;
    const auto ca = test_ca("0a01", "Root A");
    REQUIRE(register_ca(f, ca).status == 200);
    REQUIRE(register_device(f, test_device(ca, "0d01")).status == 200);
    const auto before = f.audit().size();

    const auto ok = f.call(inactivate());
    REQUIRE(ok.status == 200);
    const auto missing = f.call(inactivate("local", "0dff"));
    const auto lines = f.audit();
    REQUIRE(lines.size() == before + 2);
    CHECK(lines[before] == "devcert: admin uid=0(root) | InactivateDeviceCertificate | ca_sn=0a01 device_sn=0d01 | ok | request_id=" +
                               ok.body.at("RequestId").get<std::string>());
    CHECK(lines[before + 1] == "devcert: admin uid=0(root) | InactivateDeviceCertificate | ca_sn=0a01 device_sn=0dff | error FindDeviceBySnError | request_id=" +
                                   missing.body.at("RequestId").get<std::string>());
    CHECK(f.counters.admin_calls("InactivateDeviceCertificate", "Success") == 1);
    CHECK(f.counters.admin_calls("InactivateDeviceCertificate", "FindDeviceBySnError") == 1);
}

TEST_CASE("audit lines cannot be broken by what a client sends", "[api][access]") {
    ApiFixture f;
    (void)f.call({{"Action", "Get\nStats"}, {"MqttInstanceId", "local"}});
    (void)f.call({{"Action", "GetStats"}, {"MqttInstanceId", "local"}, {"Evil\n| ok", "x"}});
    for (const auto& line : f.audit()) {
        INFO(line);
        CHECK(line.find('\n') == std::string::npos);
        CHECK(std::count(line.begin(), line.end(), '|') == 4);
    }
}

TEST_CASE("transport refusals are answered, counted and audited like calls", "[api][access]") {
    ApiFixture f;
    struct Case {
        TransportError error;
        int status;
        const char* code;
    };
    const Case cases[] = {
        {TransportError::body_too_large, 413, "ParameterFieldCheckFailed"},
        {TransportError::too_many_params, 400, "ParameterFieldCheckFailed"},
        {TransportError::value_too_large, 400, "ParameterFieldCheckFailed"},
        {TransportError::malformed_body, 400, "ParameterFieldCheckFailed"},
        {TransportError::unsupported_media, 415, "UnsupportedMediaType"},
        {TransportError::method_not_allowed, 405, "MethodNotAllowed"},
        {TransportError::not_found, 404, "InvalidAction.NotFound"},
    };
    for (const auto& c : cases) {
        const auto reply = ApiFixture::to_reply(f.api->reject(root_caller(), c.error));
        CHECK(reply.status == c.status);
        CHECK(reply.code() == c.code);
        CHECK(reply.body.at("RequestId").get<std::string>().size() == 36);
    }
    CHECK(f.counters.admin_calls("unknown", "ParameterFieldCheckFailed") == 4);
    CHECK(f.audit().size() == std::size(cases));
}

TEST_CASE("refusals beyond 10 a second per uid are summed into one line per uid and second; successes never are",
          "[api][access][audit]") {
    ApiFixture f(kPolicy);
    const auto stats = Params{{"Action", "GetStats"}, {"MqttInstanceId", "local"}};
    for (int i = 0; i < 5; ++i) REQUIRE(f.call(stats, viewer).status == 200);
    // 2,000 refusals within the same instant: 495 PermissionCheckFailed
    // until the bucket of 500 is empty, then Throttling.User.
    for (int i = 0; i < 2000; ++i) REQUIRE(f.call(inactivate(), viewer).status >= 400);
    for (int i = 0; i < 3; ++i) REQUIRE(f.call({{"Action", "Nope"}}, ops).status == 404);
    for (int i = 0; i < 5; ++i) REQUIRE(f.call(stats, viewer).status == 429);
    auto lines = f.audit();
    const auto count = [&](std::string_view what) {
        return std::count_if(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(what) != std::string::npos; });
    };
    CHECK(lines.size() == 5 + 10 + 3);
    CHECK(count("uid=1001(viewer) | GetStats | - | ok") == 5);
    CHECK(count("uid=1001(viewer) | InactivateDeviceCertificate") == 10);
    CHECK(count("uid=1000(ops)") == 3);
    CHECK(f.counters.admin_calls("InactivateDeviceCertificate", "PermissionCheckFailed") == 495);
    CHECK(f.counters.admin_calls("InactivateDeviceCertificate", "Throttling.User") == 1505);

    f.api->flush_audit();  // the second is not over: nothing yet
    CHECK(f.audit().size() == lines.size());
    f.now += 1s;
    f.api->flush_audit();
    lines = f.audit();
    REQUIRE(lines.size() == 5 + 10 + 3 + 1);
    CHECK(lines.back() == "devcert: admin uid=1001(viewer) | refused | - | 1995 more refused within 1 s, not logged "
                          "one by one: PermissionCheckFailed=485 Throttling.User=1510 | request_id=-");
    CHECK(std::count(lines.back().begin(), lines.back().end(), '|') == 4);

    // A new second: its own lines again, and accepted calls are never summed.
    for (int i = 0; i < 20; ++i) (void)f.call({{"Action", "Nope"}}, viewer);
    for (int i = 0; i < 20; ++i) REQUIRE(f.call(stats, viewer).status == 200);
    CHECK(f.audit().size() == lines.size() + 10 + 20);
}

TEST_CASE("a uid's summary is written before its next refusal once its second is over", "[api][access][audit]") {
    ApiFixture f(kPolicy);
    for (int i = 0; i < 12; ++i) (void)f.call({{"Action", "Nope"}}, viewer);
    CHECK(f.audit().size() == 10);
    f.now += 1500ms;
    (void)f.call({{"Action", "Nope"}}, viewer);
    const auto lines = f.audit();
    REQUIRE(lines.size() == 12);
    CHECK(lines[10].find("| refused | - | 2 more refused within 1 s, not logged one by one: InvalidAction.NotFound=2 |") !=
          std::string::npos);
    CHECK(lines[11].find("| unknown | action=Nope | error InvalidAction.NotFound") != std::string::npos);
}

TEST_CASE("trusting all callers skips the policy and the rate limit and marks the change log", "[api][access]") {
    ApiFixture f(kPolicy, 1);
    f.api->set_trust_all(true);
    const auto ca = test_ca("0a01", "Root A");
    REQUIRE(register_ca(f, ca).status == 200);
    const auto nobody = named_caller(5555, "", {});
    REQUIRE(f.call({{"Action", "RegisterDeviceCertificate"}, {"MqttInstanceId", "local"}}, nobody).code() == "ParameterFieldCheckFailed");
    const auto reply = f.call({{"Action", "RegisterDeviceCertificate"}, {"MqttInstanceId", "local"},
                               {"DeviceContent", test_device(ca, "0d01").pem()}}, nobody);
    REQUIRE(reply.status == 200);
    const auto changes = f.call({{"Action", "ListCertificateChanges"}, {"MqttInstanceId", "local"}});
    CHECK(changes.body.at("Data").at("Changes").back().at("Caller") == "devcertctl uid=5555");
}

TEST_CASE("every operation refuses another instance and a missing instance id", "[api][access]") {
    ApiFixture f;
    for (const auto& op : operations()) {
        INFO(op.name);
        Params params{{"Action", std::string(op.name)}};
        for (const auto& spec : op.params) {
            if (!spec.required) continue;
            std::string value = "x";
            if (spec.kind == ParamKind::serial) value = "0a01";
            if (spec.kind == ParamKind::integer) value = std::to_string(spec.min_value);
            if (spec.kind == ParamKind::status) value = "1";
            params.emplace_back(std::string(spec.name), spec.name == "MqttInstanceId" ? "other" : value);
        }
        const auto wrong = f.call(params);
        CHECK(wrong.status == 500);
        CHECK(wrong.code() == "MqttInstanceNotFound");
        std::erase_if(params, [](const auto& p) { return p.first == "MqttInstanceId"; });
        CHECK(f.call(params).code() == "ParameterFieldCheckFailed");
    }
}

namespace {

constexpr const char* kViewerOnly = R"({"Statement": [
  {"Effect": "Allow", "Principal": {"user": ["viewer"]}, "Action": "mq:*", "Resource": "local"}
]})";

}  // namespace

TEST_CASE("reload_policy puts an edited policy file in force for the next call", "[api][access][reload]") {
    ApiFixture f(kPolicy);
    const Params stats{{"Action", "GetStats"}, {"MqttInstanceId", "local"}};
    REQUIRE(f.call(inactivate(), viewer).code() == "PermissionCheckFailed");
    REQUIRE(f.call(stats, ops).status == 200);

    f.dir.write("policy.json", kViewerOnly);
    // Nothing changes until the file is re-read.
    CHECK(f.call(stats, ops).status == 200);
    auto reloaded = f.api->reload_policy();
    REQUIRE(reloaded.ok());
    CHECK(*reloaded == 1);
    CHECK(f.call(inactivate(), viewer).code() == "FindDeviceBySnError");  // allowed now: reached the store
    CHECK(f.call(stats, ops).code() == "PermissionCheckFailed");
}

TEST_CASE("a policy file that no longer parses leaves the previous policy in force", "[api][access][reload]") {
    ApiFixture f(kPolicy);
    const Params stats{{"Action", "GetStats"}, {"MqttInstanceId", "local"}};

    SECTION("syntax error") {
        f.dir.write("policy.json", "{\n  \"Statement\": [\n    oops\n");
        auto reloaded = f.api->reload_policy();
        REQUIRE_FALSE(reloaded.ok());
        CHECK_THAT(reloaded.error().message, Catch::Contains(f.config.admin_policy) && Catch::Contains("line 3"));
    }
    SECTION("bad statement") {
        f.dir.write("policy.json",
                R"({"Statement": [{"Effect": "Permit", "Principal": "*", "Action": "mq:*", "Resource": "*"}]})");
        auto reloaded = f.api->reload_policy();
        REQUIRE_FALSE(reloaded.ok());
        CHECK_THAT(reloaded.error().message, Catch::Contains("Statement[0].Effect"));
    }
    SECTION("file removed") {
        REQUIRE(std::remove(f.config.admin_policy.c_str()) == 0);
        auto reloaded = f.api->reload_policy();
        REQUIRE_FALSE(reloaded.ok());
        CHECK_THAT(reloaded.error().message, Catch::Contains(f.config.admin_policy));
    }
    CHECK(f.call(stats, ops).status == 200);
    CHECK(f.call(inactivate(), viewer).code() == "PermissionCheckFailed");
}

TEST_CASE("without a policy file reload_policy keeps the built-in policy and says so", "[api][access][reload]") {
    ApiFixture f;
    auto reloaded = f.api->reload_policy();
    REQUIRE_FALSE(reloaded.ok());
    CHECK(reloaded.error().code == Errc::invalid_argument);
    CHECK(f.call({{"Action", "GetStats"}, {"MqttInstanceId", "local"}}, root_caller()).status == 200);
}

TEST_CASE("calls on other threads see either the old or the new policy while it is replaced", "[api][access][reload]") {
    ApiFixture f(kPolicy, 1000000);
    const Params stats{{"Action", "GetStats"}, {"MqttInstanceId", "local"}};
    std::atomic<bool> done{false};
    std::atomic<int> unexpected{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 3; ++t) {
        // Api::handle directly: Catch's assertions (in f.call) are not thread-safe.
        callers.emplace_back([&] {
            ApiRequest request;
            request.params = stats;
            while (!done.load()) {
                const int status = f.api->handle(ops, request).http_status;
                if (status != 200 && status != 403) unexpected.fetch_add(1);
            }
        });
    }
    for (int i = 0; i < 50; ++i) {
        f.dir.write("policy.json", i % 2 == 0 ? kViewerOnly : kPolicy);
        REQUIRE(f.api->reload_policy().ok());
    }
    done.store(true);
    for (auto& t : callers) t.join();
    CHECK(unexpected.load() == 0);
    CHECK(f.call(stats, ops).status == 200);  // the last file written was kPolicy
}
