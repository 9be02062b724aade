using System.Text;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

public class SampleTests
{
    private SandboxFixture _fixture = null!;
    private WasmSandbox _sandbox = null!;

    [SetUp]
    public void SetUp()
    {
        _fixture = new SandboxFixture();
        _sandbox = _fixture.Create(diskCache: false);
    }

    [TearDown]
    public void TearDown() => _fixture.Dispose();

    private static TaskSpec Spec(byte[] module, params string[] args) => new() { Module = module, Args = args };

    [TestCase("potluck", 1)]
    [TestCase("potluck", 1000)]
    [TestCase("", 3)]
    [TestCase("a seed longer than one sixty-four byte SHA-256 block, so padding spills into a second block", 17)]
    public void HashChain_PrintsTheSha256ChainOfStdin(string seed, int n)
    {
        var input = Encoding.UTF8.GetBytes(seed);

        var result = _sandbox.Execute(Spec(Samples.Load("hashchain"), n.ToString()), input);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.Success), result.Error);
        Assert.That(result.ExitCode, Is.Zero);
        Assert.That(Encoding.ASCII.GetString(result.Stdout.Span), Is.EqualTo(Samples.HashChain(input, n)));
        Assert.That(result.FuelConsumed, Is.GreaterThan(0UL));
    }

    [TestCase(1)]
    [TestCase(37)]
    [TestCase(96)]
    public void MatMul_PrintsTheChecksumComputedIndependently(int n)
    {
        var result = _sandbox.Execute(Spec(Samples.Load("matmul"), n.ToString()), default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Stdout.Span), Is.EqualTo(Samples.MatMul(n)));
    }

    [TestCase(64, 48, 100)]
    [TestCase(101, 67, 255)]
    public void Render_WritesTheMandelbrotPgmComputedIndependently(int w, int h, int maxIt)
    {
        var result = _sandbox.Execute(Spec(Samples.Load("render"), w.ToString(), h.ToString(), maxIt.ToString()), default);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.Success), result.Error);
        var expected = Samples.Render(w, h, maxIt);
        Assert.That(result.Stdout.Length, Is.EqualTo(expected.Length));
        Assert.That(result.Stdout.ToArray(), Is.EqualTo(expected));
        Assert.That(result.StdoutSha256, Is.EqualTo(System.Security.Cryptography.SHA256.HashData(expected)));
    }

    [TestCase("hashchain", "5000")]
    [TestCase("matmul", "50")]
    [TestCase("render", "80", "60", "200")]
    [TestCase("clockrand")]
    public void TwoRunsOnTwoSandboxes_GiveIdenticalOutputAndFuel(string sample, params string[] args)
    {
        var spec = Spec(Samples.Load(sample), args);
        var input = "seed"u8.ToArray();
        using var other = new SandboxFixture();

        var first = _sandbox.Execute(spec, input);
        var second = other.Create(diskCache: false).Execute(spec, input);
        var third = _sandbox.Execute(spec, input);

        Assert.That(first.Outcome, Is.EqualTo(SandboxOutcome.Success));
        Assert.That(third.ModuleSource, Is.EqualTo(ModuleSource.MemoryCache));
        foreach (var again in new[] { second, third })
        {
            Assert.That(again.Outcome, Is.EqualTo(first.Outcome));
            Assert.That(again.Stdout.ToArray(), Is.EqualTo(first.Stdout.ToArray()));
            Assert.That(again.StdoutSha256, Is.EqualTo(first.StdoutSha256));
            Assert.That(again.FuelConsumed, Is.EqualTo(first.FuelConsumed));
            Assert.That(again.IsDeterministic, Is.True);
        }
    }

    [Test]
    public void ResultNamesTheModuleSha256()
    {
        var module = Samples.Load("hashchain");

        var result = _sandbox.Execute(Spec(module, "1"), default);

        Assert.That(result.ModuleSha256, Is.EqualTo(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(module))));
    }
}
