// Host-logic test of the srdeploy TensorRT plugins through the exported getCreators(), without
// TensorRT libraries or a GPU: creators and fields, createPlugin on valid/invalid fields,
// capability interfaces, the supportsFormatCombination truth table, output types and shapes,
// the serialisation round trip (getFieldsToSerialize -> createPlugin(kRUNTIME)), clone,
// attachToContext, onShapeChange, and enqueue returning an error (not crashing) without a GPU.
// Run by tests/plugins/test_cpp_host.py, also under valgrind. Prints "N passed, M failed".
#include "sr_plugins.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

using namespace nvinfer1;

namespace
{

int gPassed = 0;
int gFailed = 0;

void check(bool ok, std::string const& what)
{
    if (ok)
    {
        ++gPassed;
    }
    else
    {
        ++gFailed;
        std::printf("FAILED: %s\n", what.c_str());
    }
}

struct FakeExprBuilder : IExprBuilder
{
    FakeExprBuilder()
    {
        mImpl = nullptr; // the plugins must only pass expressions through, never build new ones
    }
};

IPluginCreatorV3One* creatorNamed(char const* name)
{
    int32_t nb = 0;
    IPluginCreatorInterface* const* list = getCreators(nb);
    for (int32_t i = 0; i < nb; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(list[i]);
        if (std::strcmp(c->getPluginName(), name) == 0)
        {
            return c;
        }
    }
    return nullptr;
}

Dims makeDims(std::vector<int64_t> const& d)
{
    Dims out{};
    out.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
    {
        out.d[i] = d[i];
    }
    return out;
}

PluginTensorDesc makeDesc(DataType t, std::vector<int64_t> const& d, TensorFormat f = TensorFormat::kLINEAR)
{
    PluginTensorDesc desc{};
    desc.dims = makeDims(d);
    desc.type = t;
    desc.format = f;
    desc.scale = 1.F;
    return desc;
}

DynamicPluginTensorDesc makeDyn(DataType t, std::vector<int64_t> const& d, TensorFormat f = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc desc{};
    desc.desc = makeDesc(t, d, f);
    desc.min = desc.desc.dims;
    desc.opt = desc.desc.dims;
    desc.max = desc.desc.dims;
    return desc;
}

struct WaFields
{
    int32_t window{8};
    char const* biasIndex{"k-q"};
    float scale{0.25F};
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};
    PluginFieldCollection const* make()
    {
        fields = {PluginField("window", &window, PluginFieldType::kINT32, 1),
            PluginField("bias_index", biasIndex, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(biasIndex) + 1)),
            PluginField("scale", &scale, PluginFieldType::kFLOAT32, 1)};
        fc = {static_cast<int32_t>(fields.size()), fields.data()};
        return &fc;
    }
};

template <typename T>
T* cap(IPluginV3* p, PluginCapabilityType t)
{
    return static_cast<T*>(p->getCapabilityInterface(t));
}

void testCreators()
{
    int32_t nb = 0;
    IPluginCreatorInterface* const* list = getCreators(nb);
    check(nb == 2 && list != nullptr, "getCreators lists 2 creators");
    for (int32_t i = 0; i < nb; ++i)
    {
        InterfaceInfo const info = list[i]->getInterfaceInfo();
        check(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0, "creator kind is PLUGIN CREATOR_V3ONE");
        auto* c = static_cast<IPluginCreatorV3One*>(list[i]);
        check(std::strcmp(c->getPluginVersion(), "1") == 0, "creator version 1");
        check(std::strcmp(c->getPluginNamespace(), "") == 0, "creator namespace empty");
    }
    IPluginCreatorV3One* wa = creatorNamed("SRWindowAttention");
    IPluginCreatorV3One* le = creatorNamed("CiaoSRLocalEnsemble");
    check(wa != nullptr && le != nullptr, "both creators found by name");
    PluginFieldCollection const* names = wa->getFieldNames();
    check(names->nbFields == 3 && std::strcmp(names->fields[0].name, "window") == 0
            && std::strcmp(names->fields[1].name, "bias_index") == 0
            && std::strcmp(names->fields[2].name, "scale") == 0,
        "SRWindowAttention field names window, bias_index, scale");
    check(names->fields[0].type == PluginFieldType::kINT32 && names->fields[1].type == PluginFieldType::kCHAR
            && names->fields[2].type == PluginFieldType::kFLOAT32,
        "SRWindowAttention field types");
    check(le->getFieldNames()->nbFields == 0, "CiaoSRLocalEnsemble has no fields");
}

void testCreateValidity()
{
    IPluginCreatorV3One* wa = creatorNamed("SRWindowAttention");
    for (int32_t w : {8, 16, 32})
    {
        WaFields f;
        f.window = w;
        std::unique_ptr<IPluginV3> p(wa->createPlugin("l", f.make(), TensorRTPhase::kBUILD));
        check(p != nullptr, "valid window " + std::to_string(w));
    }
    {
        WaFields f;
        f.biasIndex = "q-k";
        std::unique_ptr<IPluginV3> p(wa->createPlugin("l", f.make(), TensorRTPhase::kBUILD));
        check(p != nullptr, "valid bias_index q-k");
    }
    {
        WaFields f;
        f.window = 7;
        std::unique_ptr<IPluginV3> p(wa->createPlugin("l", f.make(), TensorRTPhase::kBUILD));
        check(p == nullptr, "window 7 rejected");
    }
    {
        WaFields f;
        f.biasIndex = "x-y";
        std::unique_ptr<IPluginV3> p(wa->createPlugin("l", f.make(), TensorRTPhase::kBUILD));
        check(p == nullptr, "bias_index x-y rejected");
    }
    {
        WaFields f;
        f.scale = -1.F;
        std::unique_ptr<IPluginV3> p(wa->createPlugin("l", f.make(), TensorRTPhase::kBUILD));
        check(p == nullptr, "negative scale rejected");
    }
    {
        WaFields f;
        f.make();
        PluginFieldCollection missing{2, f.fields.data() + 1}; // no window
        std::unique_ptr<IPluginV3> p(wa->createPlugin("l", &missing, TensorRTPhase::kBUILD));
        check(p == nullptr, "missing window rejected");
    }
    {
        int32_t const w = 8;
        int64_t const w64 = 16;
        double const s = 0.5;
        PluginField const fields[] = {PluginField("window", &w64, PluginFieldType::kINT64, 1),
            PluginField("scale", &s, PluginFieldType::kFLOAT64, 1)};
        PluginFieldCollection fc{2, fields};
        std::unique_ptr<IPluginV3> p(wa->createPlugin("l", &fc, TensorRTPhase::kBUILD));
        check(p != nullptr, "int64 window / float64 scale accepted, bias_index defaults");
        PluginField const bad[] = {PluginField("window", &w, PluginFieldType::kINT32, 1),
            PluginField("heads", &w, PluginFieldType::kINT32, 1)};
        PluginFieldCollection fcBad{2, bad};
        std::unique_ptr<IPluginV3> q(wa->createPlugin("l", &fcBad, TensorRTPhase::kBUILD));
        check(q == nullptr, "unknown field rejected");
        PluginField const wrongType[] = {PluginField("window", &s, PluginFieldType::kFLOAT64, 1)};
        PluginFieldCollection fcType{1, wrongType};
        std::unique_ptr<IPluginV3> r(wa->createPlugin("l", &fcType, TensorRTPhase::kBUILD));
        check(r == nullptr, "float window rejected");
    }
    IPluginCreatorV3One* le = creatorNamed("CiaoSRLocalEnsemble");
    PluginFieldCollection empty{0, nullptr};
    std::unique_ptr<IPluginV3> ok(le->createPlugin("l", &empty, TensorRTPhase::kBUILD));
    check(ok != nullptr, "local ensemble created without fields");
    int32_t const x = 1;
    PluginField const extra[] = {PluginField("scale", &x, PluginFieldType::kINT32, 1)};
    PluginFieldCollection fcExtra{1, extra};
    std::unique_ptr<IPluginV3> bad(le->createPlugin("l", &fcExtra, TensorRTPhase::kBUILD));
    check(bad == nullptr, "local ensemble rejects fields");
}

void testWindowAttentionBuild()
{
    WaFields f;
    f.window = 16;
    std::unique_ptr<IPluginV3> p(creatorNamed("SRWindowAttention")->createPlugin("l", f.make(), TensorRTPhase::kBUILD));
    auto* core = cap<IPluginV3OneCore>(p.get(), PluginCapabilityType::kCORE);
    auto* build = cap<IPluginV3OneBuild>(p.get(), PluginCapabilityType::kBUILD);
    check(std::strcmp(core->getPluginName(), "SRWindowAttention") == 0, "core name");
    check(std::strcmp(core->getPluginVersion(), "1") == 0, "core version");
    check(build->getNbOutputs() == 1, "one output");

    // Truth table over types for every position; all linear.
    DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT32};
    std::vector<int64_t> const qd{5, 3, 256, 16};
    std::vector<int64_t> const td{3, 31 * 31};
    int combos = 0;
    for (DataType tq : types)
        for (DataType tk : types)
            for (DataType tt : types)
                for (DataType to : types)
                {
                    DynamicPluginTensorDesc io[5]
                        = {makeDyn(tq, qd), makeDyn(tk, qd), makeDyn(tk, qd), makeDyn(tt, td), makeDyn(to, qd)};
                    bool const fh = true;
                    auto isFH = [](DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF; };
                    bool expected[5] = {isFH(tq), tk == tq, tk == tq, isFH(tt), to == tq};
                    for (int32_t pos = 0; pos < 5; ++pos)
                    {
                        bool const got = build->supportsFormatCombination(pos, io, 4, 1);
                        if (got != expected[pos] && fh)
                        {
                            check(false, "supportsFormatCombination pos " + std::to_string(pos));
                            return;
                        }
                    }
                    ++combos;
                }
    check(combos == 256, "supportsFormatCombination truth table (256 combinations)");
    DynamicPluginTensorDesc chw[5] = {makeDyn(DataType::kHALF, qd, TensorFormat::kCHW2), makeDyn(DataType::kHALF, qd),
        makeDyn(DataType::kHALF, qd), makeDyn(DataType::kFLOAT, td), makeDyn(DataType::kHALF, qd)};
    check(!build->supportsFormatCombination(0, chw, 4, 1), "non-linear format rejected");

    DataType out{};
    DataType const inFloat[] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
    DataType const inHalf[] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kFLOAT};
    DataType const inInt[] = {DataType::kINT8, DataType::kINT8, DataType::kINT8, DataType::kFLOAT};
    check(build->getOutputDataTypes(&out, 1, inFloat, 4) == 0 && out == DataType::kFLOAT, "fp32 -> fp32");
    check(build->getOutputDataTypes(&out, 1, inHalf, 4) == 0 && out == DataType::kHALF, "fp16 (fp32 table) -> fp16");
    check(build->getOutputDataTypes(&out, 1, inInt, 4) != 0, "int8 rejected");

    // Shapes: expression pointers are passed through unchanged (never dereferenced here).
    static char storage[8];
    DimsExprs in[4]{};
    for (int32_t i = 0; i < 3; ++i)
    {
        in[i].nbDims = 4;
        for (int32_t j = 0; j < 4; ++j)
        {
            in[i].d[j] = reinterpret_cast<IDimensionExpr const*>(storage + j);
        }
    }
    in[3].nbDims = 2;
    in[3].d[0] = in[3].d[1] = reinterpret_cast<IDimensionExpr const*>(storage + 5);
    DimsExprs o[1]{};
    FakeExprBuilder eb;
    check(build->getOutputShapes(in, 4, nullptr, 0, o, 1, eb) == 0 && o[0].nbDims == 4 && o[0].d[0] == in[0].d[0]
            && o[0].d[3] == in[0].d[3],
        "output shape = q shape");
    in[0].nbDims = 3;
    check(build->getOutputShapes(in, 4, nullptr, 0, o, 1, eb) != 0, "rank-3 q rejected");

    DynamicPluginTensorDesc good[5] = {makeDyn(DataType::kHALF, qd), makeDyn(DataType::kHALF, qd),
        makeDyn(DataType::kHALF, qd), makeDyn(DataType::kFLOAT, td), makeDyn(DataType::kHALF, qd)};
    check(build->configurePlugin(good, 4, good + 4, 1) == 0, "configurePlugin accepts valid shapes");
    DynamicPluginTensorDesc dyn[5] = {makeDyn(DataType::kHALF, {-1, 3, 256, 16}), makeDyn(DataType::kHALF, {-1, 3, 256, 16}),
        makeDyn(DataType::kHALF, {-1, 3, 256, 16}), makeDyn(DataType::kFLOAT, td),
        makeDyn(DataType::kHALF, {-1, 3, 256, 16})};
    check(build->configurePlugin(dyn, 4, dyn + 4, 1) == 0, "configurePlugin accepts a dynamic window count");
    DynamicPluginTensorDesc badN[5] = {makeDyn(DataType::kHALF, {5, 3, 64, 16}), makeDyn(DataType::kHALF, {5, 3, 64, 16}),
        makeDyn(DataType::kHALF, {5, 3, 64, 16}), makeDyn(DataType::kFLOAT, td), makeDyn(DataType::kHALF, {5, 3, 64, 16})};
    check(build->configurePlugin(badN, 4, badN + 4, 1) != 0, "configurePlugin rejects N != window^2");
    DynamicPluginTensorDesc badD[5] = {makeDyn(DataType::kHALF, {5, 3, 256, 24}), makeDyn(DataType::kHALF, {5, 3, 256, 24}),
        makeDyn(DataType::kHALF, {5, 3, 256, 24}), makeDyn(DataType::kFLOAT, td), makeDyn(DataType::kHALF, {5, 3, 256, 24})};
    check(build->configurePlugin(badD, 4, badD + 4, 1) != 0, "configurePlugin rejects head_dim 24");
    DynamicPluginTensorDesc badT[5] = {makeDyn(DataType::kHALF, qd), makeDyn(DataType::kHALF, qd),
        makeDyn(DataType::kHALF, qd), makeDyn(DataType::kFLOAT, {3, 31, 31}), makeDyn(DataType::kHALF, qd)};
    check(build->configurePlugin(badT, 4, badT + 4, 1) != 0, "configurePlugin rejects an expanded/3-D table");
    DynamicPluginTensorDesc badH[5] = {makeDyn(DataType::kHALF, qd), makeDyn(DataType::kHALF, qd),
        makeDyn(DataType::kHALF, qd), makeDyn(DataType::kFLOAT, {4, 31 * 31}), makeDyn(DataType::kHALF, qd)};
    check(build->configurePlugin(badH, 4, badH + 4, 1) != 0, "configurePlugin rejects table heads != q heads");
}

void testWindowAttentionRuntime()
{
    WaFields f;
    f.window = 8;
    f.biasIndex = "q-k";
    f.scale = 0.125F;
    IPluginCreatorV3One* creator = creatorNamed("SRWindowAttention");
    std::unique_ptr<IPluginV3> p(creator->createPlugin("l", f.make(), TensorRTPhase::kBUILD));
    std::unique_ptr<IPluginV3> c(p->clone());
    check(c != nullptr && c.get() != p.get(), "clone returns a new object");
    auto* rt = cap<IPluginV3OneRuntime>(c.get(), PluginCapabilityType::kRUNTIME);
    PluginFieldCollection const* ser = rt->getFieldsToSerialize();
    p.reset(); // the clone must not depend on the original
    check(ser != nullptr && ser->nbFields == 3, "3 serialised fields");
    std::unique_ptr<IPluginV3> r(creator->createPlugin("l", ser, TensorRTPhase::kRUNTIME));
    check(r != nullptr, "runtime creation from serialised fields");
    auto const* wap = dynamic_cast<srdeploy::WindowAttentionPlugin const*>(r.get());
    check(wap != nullptr && wap->params().window == 8 && wap->params().biasQMinusK == 1
            && wap->params().scale == 0.125F,
        "round trip keeps window, bias_index, scale");
    auto* rrt = cap<IPluginV3OneRuntime>(r.get(), PluginCapabilityType::kRUNTIME);
    std::unique_ptr<IPluginV3> attached(rrt->attachToContext(nullptr));
    check(attached != nullptr && attached.get() != r.get(), "attachToContext returns a clone");

    PluginTensorDesc in[4] = {makeDesc(DataType::kFLOAT, {3, 2, 64, 32}), makeDesc(DataType::kFLOAT, {3, 2, 64, 32}),
        makeDesc(DataType::kFLOAT, {3, 2, 64, 32}), makeDesc(DataType::kFLOAT, {2, 225})};
    PluginTensorDesc out[1] = {makeDesc(DataType::kFLOAT, {3, 2, 64, 32})};
    check(rrt->onShapeChange(in, 4, out, 1) == 0, "onShapeChange accepts valid dims");
    PluginTensorDesc wrongOut[1] = {makeDesc(DataType::kFLOAT, {3, 2, 64, 16})};
    check(rrt->onShapeChange(in, 4, wrongOut, 1) != 0, "onShapeChange rejects a wrong output shape");

    int device = 0;
    if (cudaGetDeviceCount(&device) != cudaSuccess || device == 0)
    {
        cudaGetLastError();
        std::vector<float> host(3 * 2 * 64 * 32);
        std::vector<float> table(2 * 225);
        void const* inputs[4] = {host.data(), host.data(), host.data(), table.data()};
        void* outputs[1] = {host.data()};
        check(rrt->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0, "enqueue without a GPU returns an error");
    }
}

void testLocalEnsemble()
{
    IPluginCreatorV3One* creator = creatorNamed("CiaoSRLocalEnsemble");
    PluginFieldCollection empty{0, nullptr};
    std::unique_ptr<IPluginV3> p(creator->createPlugin("l", &empty, TensorRTPhase::kBUILD));
    auto* build = cap<IPluginV3OneBuild>(p.get(), PluginCapabilityType::kBUILD);
    DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT32};
    int combos = 0;
    bool allOk = true;
    for (DataType a : types)
        for (DataType b : types)
            for (DataType c : types)
                for (DataType d : types)
                {
                    DynamicPluginTensorDesc io[4] = {makeDyn(a, {7, 36}), makeDyn(b, {7, 4, 36}),
                        makeDyn(c, {7, 4, 30}), makeDyn(d, {7, 30})};
                    bool const fh = a == DataType::kFLOAT || a == DataType::kHALF;
                    bool const expected[4] = {fh, b == a, c == a, d == a};
                    for (int32_t pos = 0; pos < 4; ++pos)
                    {
                        allOk = allOk && build->supportsFormatCombination(pos, io, 3, 1) == expected[pos];
                    }
                    ++combos;
                }
    check(allOk && combos == 81, "local ensemble supportsFormatCombination truth table");
    DataType out{};
    DataType const inHalf[] = {DataType::kHALF, DataType::kHALF, DataType::kHALF};
    check(build->getOutputDataTypes(&out, 1, inHalf, 3) == 0 && out == DataType::kHALF, "local ensemble fp16 -> fp16");

    static char storage[8];
    auto e = [](int i) { return reinterpret_cast<IDimensionExpr const*>(storage + i); };
    DimsExprs in[3]{};
    in[0].nbDims = 3; // (N, Q, C1)
    in[0].d[0] = e(0);
    in[0].d[1] = e(1);
    in[0].d[2] = e(2);
    in[1].nbDims = 4;
    in[1].d[0] = e(0);
    in[1].d[1] = e(1);
    in[1].d[2] = e(3);
    in[1].d[3] = e(2);
    in[2].nbDims = 4;
    in[2].d[0] = e(0);
    in[2].d[1] = e(1);
    in[2].d[2] = e(3);
    in[2].d[3] = e(4);
    DimsExprs o[1]{};
    FakeExprBuilder eb;
    check(build->getOutputShapes(in, 3, nullptr, 0, o, 1, eb) == 0 && o[0].nbDims == 3 && o[0].d[0] == e(0)
            && o[0].d[1] == e(1) && o[0].d[2] == e(4),
        "local ensemble output shape (N, Q, C2)");

    DynamicPluginTensorDesc bad[4] = {makeDyn(DataType::kFLOAT, {7, 36}), makeDyn(DataType::kFLOAT, {7, 3, 36}),
        makeDyn(DataType::kFLOAT, {7, 3, 30}), makeDyn(DataType::kFLOAT, {7, 30})};
    check(build->configurePlugin(bad, 3, bad + 3, 1) != 0, "local ensemble rejects 3 neighbours");
    DynamicPluginTensorDesc badC[4] = {makeDyn(DataType::kFLOAT, {7, 36}), makeDyn(DataType::kFLOAT, {7, 4, 35}),
        makeDyn(DataType::kFLOAT, {7, 4, 30}), makeDyn(DataType::kFLOAT, {7, 30})};
    check(build->configurePlugin(badC, 3, badC + 3, 1) != 0, "local ensemble rejects C1 mismatch");

    std::unique_ptr<IPluginV3> c(p->clone());
    auto* rt = cap<IPluginV3OneRuntime>(c.get(), PluginCapabilityType::kRUNTIME);
    std::unique_ptr<IPluginV3> r(creator->createPlugin("l", rt->getFieldsToSerialize(), TensorRTPhase::kRUNTIME));
    check(r != nullptr, "local ensemble serialisation round trip");
    PluginTensorDesc rin[3] = {makeDesc(DataType::kHALF, {2, 5, 36}), makeDesc(DataType::kHALF, {2, 5, 4, 36}),
        makeDesc(DataType::kHALF, {2, 5, 4, 30})};
    PluginTensorDesc rout[1] = {makeDesc(DataType::kHALF, {2, 5, 30})};
    auto* rrt = cap<IPluginV3OneRuntime>(r.get(), PluginCapabilityType::kRUNTIME);
    check(rrt->onShapeChange(rin, 3, rout, 1) == 0, "local ensemble onShapeChange");
}

} // namespace

int main()
{
    testCreators();
    testCreateValidity();
    testWindowAttentionBuild();
    testWindowAttentionRuntime();
    testLocalEnsemble();
    std::printf("%d passed, %d failed\n", gPassed, gFailed);
    return gFailed == 0 ? 0 : 1;
}
