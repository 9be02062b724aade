using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

public class WasiRunStateTests
{
    private static WasiRunState NewState(byte[] seed) => new(default, [], 16, 16, seed);

    [Test]
    public void FillRandom_GivesTheSameStreamHoweverItIsChunked()
    {
        var seed = WasiRunState.DeriveRandomSeed(new byte[32], ["a"], "in"u8);
        var whole = new byte[100];
        NewState(seed).FillRandom(whole);

        var chunked = new byte[100];
        var state = NewState(seed);
        state.FillRandom(chunked.AsSpan(0, 7));
        state.FillRandom(chunked.AsSpan(7, 50));
        state.FillRandom(chunked.AsSpan(57));

        Assert.That(chunked, Is.EqualTo(whole));
        Assert.That(whole.Distinct().Count(), Is.GreaterThan(50));
    }

    [Test]
    public void DeriveRandomSeed_DependsOnModuleArgsAndInput()
    {
        var baseSeed = WasiRunState.DeriveRandomSeed(new byte[32], ["a", "b"], "in"u8);

        Assert.That(WasiRunState.DeriveRandomSeed(new byte[32], ["a", "b"], "in"u8), Is.EqualTo(baseSeed));
        Assert.That(WasiRunState.DeriveRandomSeed(new byte[32], ["ab"], "in"u8), Is.Not.EqualTo(baseSeed));
        Assert.That(WasiRunState.DeriveRandomSeed(new byte[32], ["a", "b"], "im"u8), Is.Not.EqualTo(baseSeed));
        Assert.That(WasiRunState.DeriveRandomSeed(Enumerable.Repeat((byte)1, 32).ToArray(), ["a", "b"], "in"u8), Is.Not.EqualTo(baseSeed));
    }

    [Test]
    public void Clock_AdvancesOneStepPerReading()
    {
        var state = NewState(new byte[32]);

        Assert.That(state.ReadClock(), Is.EqualTo(0UL));
        Assert.That(state.ReadClock(), Is.EqualTo(WasiRunState.ClockStepNs));
        Assert.That(state.VirtualTimeNs, Is.EqualTo(2 * WasiRunState.ClockStepNs));
    }

    [Test]
    public void Stdout_KeepsExactlyTheCap_AndReportsTheOverflow()
    {
        var state = NewState(new byte[32]);

        Assert.That(state.WriteStdout(new byte[10]), Is.True);
        Assert.That(state.WriteStdout(new byte[10]), Is.False);
        Assert.That(state.Stdout.Length, Is.EqualTo(16));
    }

    [Test]
    public void LazySeed_IsDerivedOnlyOnTheFirstRandomRead_AndGivesTheSameStream()
    {
        var seed = WasiRunState.DeriveRandomSeed(new byte[32], ["a"], "in"u8);
        var derived = 0;
        var lazy = new WasiRunState(default, [], 16, 16, () =>
        {
            derived++;
            return WasiRunState.DeriveRandomSeed(new byte[32], ["a"], "in"u8);
        });
        var eager = new byte[70];
        NewState(seed).FillRandom(eager);

        Assert.That(derived, Is.Zero);
        var fromLazy = new byte[70];
        lazy.FillRandom(fromLazy.AsSpan(0, 10));
        lazy.FillRandom(fromLazy.AsSpan(10));

        Assert.That(derived, Is.EqualTo(1));
        Assert.That(fromLazy, Is.EqualTo(eager));
    }
}
