using Potluck.Node.Cli;
using Potluck.Node.Hosting;
using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Tests.Cli;

/// <summary>Debit-note settings: documented defaults, range-checked at start with a message naming the key.</summary>
public class DebitNoteOptionsTests
{
    private static IReadOnlyList<string> Problems(LeaseOptions? provider = null, LeaseOptions? client = null)
    {
        var compute = new ComputeOptions();
        return PotluckOptionsValidator.Validate(new PotluckOptions
        {
            Compute = compute with
            {
                Provider = compute.Provider with { Lease = provider ?? new LeaseOptions() },
                Client = compute.Client with { Lease = client ?? new LeaseOptions() },
            },
        });
    }

    [Test]
    public void Defaults_AreValid_ASliceOf2To30_TenSeconds_4096Notes()
    {
        var d = new LeaseOptions();
        Assert.That((d.DebitNoteFuel, d.DebitNoteTimeout, d.MaxDebitNotesPerLease), Is.EqualTo((1L << 30, TimeSpan.FromSeconds(10), 4096)));
        Assert.That(Problems(), Is.Empty);
        Assert.That(Problems(new LeaseOptions { DebitNoteFuel = 0 }), Is.Empty, "0 turns debit notes off");
    }

    [TestCase(1_000L, "'compute:provider:lease:debitNoteFuel' is 1000; it must be 0 (off) or from 1048576 to 1125899906842624")]
    [TestCase(-1L, "'compute:provider:lease:debitNoteFuel' is -1")]
    [TestCase(1L << 51, "'compute:provider:lease:debitNoteFuel' is 2251799813685248")]
    public void SliceOutOfRange_IsRefusedWithItsKey(long fuel, string expected) =>
        Assert.That(Problems(new LeaseOptions { DebitNoteFuel = fuel }), Has.Some.StartsWith(expected));

    [Test]
    public void TimeoutAndMostNotes_OutOfRange_AreRefusedWithTheirKeys()
    {
        Assert.That(Problems(new LeaseOptions { DebitNoteTimeout = TimeSpan.Zero }),
            Has.Some.StartsWith("'compute:provider:lease:debitNoteTimeout' is 00:00:00; it must be from 00:00:00.1 to 00:10:00"));
        Assert.That(Problems(new LeaseOptions { DebitNoteTimeout = TimeSpan.FromHours(1) }), Has.Some.StartsWith("'compute:provider:lease:debitNoteTimeout' is 01:00:00"));
        Assert.That(Problems(client: new LeaseOptions { MaxDebitNotesPerLease = 0 }),
            Has.Some.StartsWith("'compute:client:lease:maxDebitNotesPerLease' is 0; it must be from 1 to 1048576"));
    }

    [Test]
    public void TheKeys_BindFromTheConfigurationFile()
    {
        var dir = Directory.CreateTempSubdirectory("potluck-cli-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, NodeConfiguration.FileName),
                "{\"compute\": {\"provider\": {\"lease\": {\"debitNoteFuel\": 2097152, \"debitNoteTimeout\": \"00:00:30\"}}}}");
            var options = RunCommand.ResolveRunOptions(Commands.Parse(["run", "--data-dir", dir]));
            Assert.That((options.Compute.Provider.Lease.DebitNoteFuel, options.Compute.Provider.Lease.DebitNoteTimeout),
                Is.EqualTo((2_097_152L, TimeSpan.FromSeconds(30))));

            File.WriteAllText(Path.Combine(dir, NodeConfiguration.FileName), "{\"compute\": {\"provider\": {\"lease\": {\"debitNoteFuel\": 5}}}}");
            var e = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => RunCommand.ResolveRunOptions(Commands.Parse(["run", "--data-dir", dir])))!;
            Assert.That(e.Failures, Has.Some.Contains("'compute:provider:lease:debitNoteFuel' is 5"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
