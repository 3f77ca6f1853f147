"""The RAG corpus (issue 6): seeded, synthetic, PHI-free documents for retrieval-augmented answers.

Three kinds of document, by doc_id prefix:

- ``sop-<slug>``: healthcare-operations and clinical-documentation SOPs (medication reconciliation,
  specimen labelling, verbal orders, SBAR hand-off, ...), each a title and 5 checkable facts
  (numbers, time limits, roles) written as prose. The facts are fixed per document; the seed
  changes the wording around them (opening and closing sentences, lead-ins, fact order).
- ``amr-<syndrome>`` and ``amr-drug-<drug>``: the AMR guideline table of
  configs/amr_guidelines.yaml (read with synthetic.amr_cases.load_guidelines) as prose. Every
  number of these documents comes from that file; none is typed here.
- ``brsop-<slug>``: one batch-record SOP per deviation type of configs/deviations.yaml (the rule,
  the ALCOA+ principles, why it matters, how to correct it, grouped by the record fields the type
  touches), plus ``brsop-site-rules`` and ``brsop-alcoa-principles``.

The corpus is synthetic and PHI-free: no person's name, date of birth, address, contact detail or
record number appears in it (roles only: "the nurse", "the pharmacist").

Each fact sentence has a stable key and a closed set of allowed wordings (`fact_variants`), so
that synthetic.rag_questions can find the verbatim evidence sentence in any seed's document
(`evidence_sentence`). Same seed -> identical documents.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from retrieval.chunking import Document
from synthetic.amr_cases import Drug, Guidelines, Regimen, Syndrome, load_guidelines
from synthetic.catalog import DeviationCatalog, DeviationType, load_catalog

KINDS = ("sop", "amr", "brsop")
LEAD_INS = ("", "As a rule, ", "Under this procedure, ", "In every case, ")


@dataclass(frozen=True)
class SopFact:
    """One checkable fact of an SOP: its sentence, short answer and two ways to ask for it."""

    key: str
    sentence: str
    answer: str
    lookup: str  # shares the rare words of the sentence
    paraphrase: str  # synonyms only


@dataclass(frozen=True)
class SopSpec:
    """One healthcare-operations SOP."""

    slug: str
    code: str
    title: str
    topic: str
    facts: tuple[SopFact, ...]

    @property
    def doc_id(self) -> str:
        return f"sop-{self.slug}"


def _sop(slug: str, code: str, title: str, topic: str,
         facts: list[tuple[str, str, str, str]]) -> SopSpec:
    return SopSpec(slug, code, title, topic, tuple(
        SopFact(f"{slug}.{i}", sentence, answer, lookup, paraphrase)
        for i, (sentence, answer, lookup, paraphrase) in enumerate(facts, start=1)))


SOPS: tuple[SopSpec, ...] = (
    _sop("medication-reconciliation", "SOP-CL-011", "Medication reconciliation on admission",
         "medication reconciliation", [
             ("Medication reconciliation is completed within 24 hours of admission.",
              "Within 24 hours of admission.",
              "Within how many hours of admission must medication reconciliation be completed?",
              "How soon after a patient arrives must the list of drugs they take at home be "
              "checked against the ward chart?"),
             ("The best possible medication history uses at least two sources, one of which is "
              "an interview with the patient or carer.",
              "At least two sources, one an interview with the patient or carer.",
              "How many sources does the best possible medication history use?",
              "When finding out which drugs someone took before coming in, how many independent "
              "places of information are needed?"),
             ("A pharmacist or pharmacy technician reviews the reconciliation of every patient "
              "taking five or more regular medicines.",
              "A pharmacist or pharmacy technician, for patients on five or more regular "
              "medicines.",
              "Who reviews the medication reconciliation of patients taking five or more regular "
              "medicines?",
              "Which staff must check the work when someone is on lots of long-term drugs?"),
             ("Each discrepancy between the home medication list and the inpatient chart is "
              "documented with the reason it was continued, stopped or changed.",
              "Each discrepancy, with the reason it was continued, stopped or changed.",
              "How is a discrepancy between the home medication list and the inpatient chart "
              "documented?",
              "If what a person takes at home differs from what is prescribed on the ward, what "
              "has to be written down?"),
             ("Reconciliation is repeated at every transfer between wards and again at "
              "discharge.",
              "At every transfer between wards and again at discharge.",
              "When is reconciliation repeated after admission?",
              "Must the check of someone's drugs be done again when they move unit or go home?"),
         ]),
    _sop("specimen-labelling", "SOP-LAB-004", "Specimen labelling at the bedside",
         "specimen labelling", [
             ("Every specimen label carries two patient identifiers, the collection time and the "
              "initials of the collector.",
              "Two patient identifiers, the collection time and the collector's initials.",
              "What must every specimen label carry?",
              "What information has to be written on a sample tube's sticker?"),
             ("Specimen tubes are labelled at the bedside in the presence of the patient, never "
              "before the sample is drawn.",
              "At the bedside in the presence of the patient, never before the sample is drawn.",
              "Are specimen tubes labelled before or after the sample is drawn?",
              "Can blood bottles be marked up in advance at the nursing station?"),
             ("The laboratory rejects an unlabelled or mislabelled specimen and the sample is "
              "recollected.",
              "It is rejected and the sample is recollected.",
              "What does the laboratory do with an unlabelled or mislabelled specimen?",
              "What happens when a tube arrives in pathology with missing or wrong details?"),
             ("Blood bank samples for crossmatch are valid for 72 hours after collection.",
              "72 hours after collection.",
              "For how many hours are blood bank samples for crossmatch valid?",
              "How long can a group-and-screen tube be used before a fresh one is required?"),
             ("A labelling error is reported in the incident system within one working day.",
              "Within one working day, in the incident system.",
              "By when is a labelling error reported in the incident system?",
              "How quickly must a mistake on a sample sticker be logged as a safety event?"),
         ]),
    _sop("discharge-summary", "SOP-DOC-007", "Discharge summary content",
         "the discharge summary", [
             ("The discharge summary is sent to the general practitioner within 24 hours of "
              "discharge.",
              "Within 24 hours of discharge.",
              "Within how many hours of discharge is the discharge summary sent to the general "
              "practitioner?",
              "How fast must the family doctor receive the letter when someone leaves hospital?"),
             ("The discharge summary lists every medicine started, stopped or changed, with the "
              "reason for each change.",
              "Every medicine started, stopped or changed, with the reason.",
              "Which medicines does the discharge summary list?",
              "What has to be said about drug changes in the letter written when a person goes "
              "home?"),
             ("Pending test results at discharge are named in the summary together with the "
              "clinician responsible for following them up.",
              "Each pending result and the clinician responsible for following it up.",
              "How are pending test results at discharge handled in the summary?",
              "If some investigations have not come back when someone leaves, what must the "
              "letter state?"),
             ("The responsible consultant or a delegated registrar signs the discharge summary.",
              "The responsible consultant or a delegated registrar.",
              "Who signs the discharge summary?",
              "Which doctor is allowed to approve the letter written when someone leaves "
              "hospital?"),
             ("A copy of the discharge summary is given to the patient before they leave the "
              "ward.",
              "The patient receives a copy before leaving the ward.",
              "Does the patient get a copy of the discharge summary?",
              "Is the person going home handed their own version of the letter?"),
         ]),
    _sop("adverse-event-reporting", "SOP-PV-002", "Adverse-event reporting timelines",
         "adverse-event reporting", [
             ("A serious adverse event is reported to the sponsor within 24 hours of the site "
              "becoming aware of it.",
              "Within 24 hours of awareness.",
              "Within how many hours is a serious adverse event reported to the sponsor?",
              "How quickly does a trial team have to tell the company about a grave harmful "
              "reaction?"),
             ("A suspected unexpected serious adverse reaction that is fatal or life-threatening "
              "is reported to the regulator within 7 calendar days.",
              "Within 7 calendar days.",
              "What is the reporting deadline for a fatal or life-threatening SUSAR?",
              "If a trial drug may have caused a death and this was not foreseen, how long does "
              "the agency get to be told?"),
             ("Other suspected unexpected serious adverse reactions are reported within 15 "
              "calendar days.",
              "Within 15 calendar days.",
              "Within how many calendar days are other suspected unexpected serious adverse "
              "reactions reported?",
              "What is the time limit for notifying unforeseen grave drug reactions that did not "
              "kill or endanger life?"),
             ("The principal investigator assesses causality and signs the adverse-event form.",
              "The principal investigator.",
              "Who assesses causality and signs the adverse-event form?",
              "Which person in a study decides whether the medicine caused the harm?"),
             ("Follow-up information on a serious adverse event is sent within 8 days of the "
              "initial report.",
              "Within 8 days of the initial report.",
              "When is follow-up information on a serious adverse event sent?",
              "After the first notice of a grave harm in a study, how long until the extra "
              "details must go out?"),
         ]),
    _sop("verbal-orders", "SOP-CL-019", "Verbal and telephone orders", "verbal orders", [
        ("Verbal orders are accepted only in an emergency or when the prescriber is scrubbed in "
         "a sterile procedure.",
         "Only in an emergency or when the prescriber is scrubbed in a sterile procedure.",
         "When are verbal orders accepted?",
         "In what situations may a nurse take a spoken instruction for a drug instead of a "
         "written one?"),
        ("The nurse receiving a verbal order writes it down and reads it back to the prescriber, "
         "who confirms it.",
         "The receiver writes it down and reads it back; the prescriber confirms.",
         "What is the read-back rule for a verbal order?",
         "After hearing a spoken prescription, what must the listener repeat to the doctor?"),
        ("The prescriber countersigns a verbal order within 24 hours.",
         "Within 24 hours.",
         "Within how many hours does the prescriber countersign a verbal order?",
         "How long has a doctor got to add their signature to a spoken instruction?"),
        ("Verbal orders for chemotherapy are never accepted.",
         "Never.",
         "Are verbal orders for chemotherapy accepted?",
         "Can cancer drug treatment be prescribed by phone or by voice?"),
        ("A second nurse witnesses a telephone order for a controlled drug.",
         "A second nurse witnesses it.",
         "Who witnesses a telephone order for a controlled drug?",
         "When an opioid is prescribed over the phone, who else must listen in?"),
    ]),
    _sop("controlled-drug-register", "SOP-PH-006", "Controlled-drug register",
         "the controlled-drug register", [
             ("Each controlled-drug register entry is made at the time of administration and "
              "signed by two registered staff.",
              "At the time of administration, signed by two registered staff.",
              "How many registered staff sign a controlled-drug register entry?",
              "How many qualified people put their names to each line of the opioid book?"),
             ("The stock balance of every controlled drug is checked by two registered staff at "
              "each shift change.",
              "By two registered staff at each shift change.",
              "When is the stock balance of every controlled drug checked?",
              "How often are the quantities of scheduled medicines in the cupboard counted?"),
             ("A discrepancy in the controlled-drug balance is reported to the pharmacy and the "
              "ward manager within one hour.",
              "Within one hour, to the pharmacy and the ward manager.",
              "Within what time is a discrepancy in the controlled-drug balance reported?",
              "If the opioid count does not match, how soon must someone be told?"),
             ("Errors in the register are never erased: the entry is bracketed, marked as an "
              "error and signed, and the correct entry follows.",
              "Bracket the entry, mark it as an error and sign it; the correct entry follows.",
              "How are errors in the controlled-drug register corrected?",
              "What do you do if you wrote a wrong line in the opioid book?"),
             ("Completed controlled-drug registers are kept for at least 2 years after the last "
              "entry.",
              "At least 2 years after the last entry.",
              "How long are completed controlled-drug registers kept?",
              "For how long must a filled opioid book be stored once finished?"),
         ]),
    _sop("handoff-sbar", "SOP-CL-023", "Clinical hand-off with SBAR", "SBAR hand-off", [
        ("Every nursing and medical hand-off uses the SBAR structure: situation, background, "
         "assessment and recommendation.",
         "Situation, background, assessment and recommendation.",
         "What does the SBAR structure of a hand-off stand for?",
         "Which four headings organise the briefing when care passes to the next shift?"),
        ("Hand-off of a deteriorating patient is done face to face, not by message or voicemail.",
         "Face to face, not by message or voicemail.",
         "How is the hand-off of a deteriorating patient done?",
         "When someone is getting sicker, may the next team be briefed through a text?"),
        ("The receiving clinician repeats back the outstanding tasks and the escalation plan.",
         "The outstanding tasks and the escalation plan.",
         "What does the receiving clinician repeat back at hand-off?",
         "What must the person taking over care say again to confirm they understood?"),
        ("The early warning score at the time of hand-off is stated in the assessment part.",
         "The early warning score at the time of hand-off.",
         "Which score is stated in the assessment part of SBAR?",
         "Which number describing how unwell someone is must be shared when care passes on?"),
        ("Hand-off for a patient leaving intensive care includes a written summary signed by "
         "the discharging intensivist.",
         "A written summary signed by the discharging intensivist.",
         "What accompanies the hand-off of a patient leaving intensive care?",
         "When someone steps down from critical care, what paperwork goes with them?"),
    ]),
    _sop("consent-documentation", "SOP-DOC-012", "Consent documentation", "consent", [
        ("Written consent for a planned procedure is obtained by the clinician performing it or "
         "a trained delegate.",
         "The clinician performing the procedure or a trained delegate.",
         "Who obtains written consent for a planned procedure?",
         "Which doctor has to get a signature agreeing to an operation?"),
        ("The consent form records the intended benefits, the serious and frequent risks, and "
         "the alternatives discussed.",
         "Intended benefits, serious and frequent risks, and the alternatives discussed.",
         "What does the consent form record?",
         "What must be written down about the good and bad outcomes talked through before an "
         "operation?"),
        ("Consent is confirmed again on the day of the procedure if it was signed more than "
         "30 days before.",
         "On the day of the procedure when signed more than 30 days before.",
         "When is consent confirmed again on the day of the procedure?",
         "If agreement to an operation was given over a month earlier, what happens that "
         "morning?"),
        ("An interpreter is used when the patient's preferred language differs from the "
         "clinician's, and the interpreter's identification number is recorded.",
         "An interpreter, whose identification number is recorded.",
         "When is an interpreter used for consent, and what is recorded?",
         "If someone does not speak the doctor's language, who helps and what is noted?"),
        ("A withdrawal of consent is documented in the clinical notes with the time and the "
         "clinician informed.",
         "In the clinical notes, with the time and the clinician informed.",
         "How is a withdrawal of consent documented?",
         "When a person changes their mind about going ahead, where is that written?"),
    ]),
    _sop("late-entries-corrections", "SOP-DOC-003", "Late entries and corrections in clinical "
         "notes", "late entries and corrections", [
             ("A late entry is labelled 'late entry' and carries both the time it was written "
              "and the time of the event it describes.",
              "Labelled 'late entry', with the writing time and the event time.",
              "How is a late entry labelled in the clinical notes?",
              "When notes are written some time after what happened, what must they show?"),
             ("An entry made more than 4 hours after the event is a late entry.",
              "More than 4 hours after the event.",
              "After how many hours is an entry a late entry?",
              "How much delay between what happened and writing it turns a note into a delayed "
              "record?"),
             ("A correction on paper is a single line through the original text, which stays "
              "legible, with the date, time, signature and reason.",
              "A single line through the original, which stays legible, with date, time, "
              "signature and reason.",
              "How is a correction made on paper clinical notes?",
              "If you write something wrong in the handwritten chart, how do you fix it?"),
             ("Correction fluid, overwriting and removing pages are forbidden.",
              "Forbidden.",
              "Is correction fluid allowed in clinical notes?",
              "May a mistake in the chart be painted over or the sheet taken out?"),
             ("In the electronic record an amendment keeps the original version in the audit "
              "trail and names the person amending it.",
              "The original stays in the audit trail and the person amending it is named.",
              "What does an amendment in the electronic record keep?",
              "When a computer note is changed, what happens to the first version?"),
         ]),
    _sop("cold-chain-excursion", "SOP-PH-014", "Cold-chain excursion for vaccines and "
         "refrigerated medicines", "cold-chain excursions", [
             ("Refrigerated medicines are stored between 2 and 8 degrees Celsius.",
              "Between 2 and 8 degrees Celsius.",
              "Between which temperatures are refrigerated medicines stored?",
              "How cold must the fridge for vaccines be kept?"),
             ("Fridge temperatures are read and recorded twice daily, including the minimum and "
              "maximum since the last reading.",
              "Twice daily, with the minimum and maximum since the last reading.",
              "How often are fridge temperatures read and recorded?",
              "How many times a day is the vaccine cooler checked?"),
             ("During an excursion the affected stock is quarantined in a working fridge and "
              "labelled 'do not use' until pharmacy decides.",
              "Quarantined in a working fridge, labelled 'do not use', until pharmacy decides.",
              "What happens to the affected stock during an excursion?",
              "If the cooler got too warm, what do you do with the vials inside?"),
             ("An excursion is reported to pharmacy within 1 hour of discovery.",
              "Within 1 hour of discovery.",
              "Within how many hours of discovery is an excursion reported to pharmacy?",
              "How quickly must the chemists be told when a vaccine cooler went out of range?"),
             ("Each temperature logger is calibrated every 12 months.",
              "Every 12 months.",
              "How often is each temperature logger calibrated?",
              "How frequently must the thermometer devices be checked against a standard?"),
         ]),
    _sop("downtime-procedures", "SOP-IT-009", "Electronic record downtime procedures",
         "downtime", [
             ("When the electronic record is unavailable for more than 30 minutes the ward "
              "switches to paper downtime forms.",
              "After more than 30 minutes of unavailability.",
              "After how many minutes of electronic record unavailability does the ward switch "
              "to paper downtime forms?",
              "How long must the computer system be out before staff start writing on sheets?"),
             ("Downtime forms are numbered and held in the ward's red downtime box.",
              "Numbered and held in the ward's red downtime box.",
              "Where are downtime forms held?",
              "Where are the spare paper sheets kept for when the computers fail?"),
             ("The medication administration during downtime is recorded on the paper chart and "
              "entered back into the electronic record within 24 hours of recovery.",
              "Entered back within 24 hours of recovery.",
              "Within how many hours of recovery is medication administration during downtime "
              "entered back into the electronic record?",
              "Once the computers return, by when must drug rounds written on sheets be typed "
              "in?"),
             ("Back-entered data are marked as 'downtime entry' with the original time of the "
              "event.",
              "Marked 'downtime entry' with the original time of the event.",
              "How are back-entered data marked after downtime?",
              "How can a reader tell that a note was typed in later from a sheet?"),
             ("The IT service desk announces the start and end of a planned downtime at least "
              "48 hours in advance.",
              "At least 48 hours in advance.",
              "How far in advance is a planned downtime announced?",
              "How much notice do wards get before scheduled system maintenance?"),
         ]),
    _sop("patient-identification", "SOP-CL-001", "Positive patient identification",
         "patient identification", [
             ("Staff confirm two identifiers, full name and date of birth, before every "
              "medication, test or procedure.",
              "Two identifiers: full name and date of birth.",
              "Which two identifiers are confirmed before every medication, test or procedure?",
              "What must be checked about who someone is before giving them a drug?"),
             ("The identifiers are confirmed against the wristband and, when the patient is able, "
              "by asking them to state their details.",
              "Against the wristband and by asking the patient to state them.",
              "Against what are the identifiers confirmed?",
              "How is it checked that the right person is in the bed?"),
             ("A patient without a wristband receives no treatment other than emergency care "
              "until a wristband is applied.",
              "No treatment other than emergency care until a wristband is applied.",
              "What treatment does a patient without a wristband receive?",
              "If someone has no ID band on their arm, can you still give routine drugs?"),
             ("Unknown patients receive a temporary identity from the admissions office, which "
              "is merged with the true record once they are identified.",
              "A temporary identity, merged with the true record later.",
              "What identity do unknown patients receive?",
              "How is an unconscious person with no papers registered?"),
             ("The room or bed number is never used as an identifier.",
              "Never.",
              "Is the room or bed number used as an identifier?",
              "Can the location of someone on the ward be relied on to know who they are?"),
         ]),
    _sop("blood-transfusion-checks", "SOP-TX-005", "Blood transfusion bedside checks",
         "blood transfusion", [
             ("Two registered staff perform the bedside check of every blood component "
              "independently.",
              "Two registered staff, independently.",
              "Who performs the bedside check of every blood component?",
              "How many qualified people verify a bag of red cells next to the patient?"),
             ("A red cell unit is started within 30 minutes of leaving the blood fridge and "
              "completed within 4 hours.",
              "Started within 30 minutes of leaving the fridge, completed within 4 hours.",
              "Within what times is a red cell unit started and completed?",
              "How long may a bag of blood sit out before it must be running, and how long may "
              "it run?"),
             ("Observations are recorded before the start, 15 minutes after the start and at the "
              "end of each unit.",
              "Before the start, 15 minutes after the start and at the end.",
              "When are observations recorded during a transfusion?",
              "At which points during giving blood must the pulse and temperature be taken?"),
             ("A suspected transfusion reaction means stopping the transfusion, keeping the line "
              "open with saline and calling the doctor.",
              "Stop it, keep the line open with saline and call the doctor.",
              "What is done for a suspected transfusion reaction?",
              "If someone gets a fever or rash while receiving blood, what are the first steps?"),
             ("The compatibility label and the traceability tag of every unit are kept for 30 "
              "years.",
              "30 years.",
              "How long are the compatibility label and traceability tag kept?",
              "For how long must the tracking slip of each bag of blood be retained?"),
         ]),
    _sop("critical-results", "SOP-LAB-010", "Communication of critical results",
         "critical results", [
             ("The laboratory telephones a critical result to the responsible clinician within "
              "30 minutes of validation.",
              "Within 30 minutes of validation.",
              "Within how many minutes of validation is a critical result telephoned?",
              "How quickly must the lab ring the ward about a dangerous blood value?"),
             ("The clinician receiving a critical result reads it back and the laboratory "
              "records the name of the receiver and the time.",
              "The receiver reads it back; the lab records who received it and when.",
              "What is recorded when a critical result is received?",
              "When the lab calls with an alarming value, what do both sides do?"),
             ("If the responsible clinician cannot be reached within 15 minutes, the result is "
              "escalated to the on-call consultant.",
              "Escalated to the on-call consultant after 15 minutes.",
              "To whom is a critical result escalated if the clinician cannot be reached?",
              "If the ward doctor does not answer about an alarming value, who is called next?"),
             ("A potassium above 6.5 mmol/L is a critical result.",
              "Potassium above 6.5 mmol/L.",
              "Which potassium level is a critical result?",
              "At what salt level in the blood does the lab phone straight away for "
              "hyperkalaemia?"),
             ("Action taken on a critical result is documented in the clinical notes within "
              "1 hour.",
              "Within 1 hour, in the clinical notes.",
              "When is the action taken on a critical result documented?",
              "How soon must the response to an alarming lab value be written in the chart?"),
         ]),
    _sop("allergy-documentation", "SOP-CL-015", "Allergy documentation", "allergy recording", [
        ("Allergy status is recorded before the first medicine is prescribed, including 'no "
         "known allergies' when there are none.",
         "Before the first prescription, including 'no known allergies'.",
         "When is allergy status recorded?",
         "Before writing up any drug, what must be noted about bad reactions in the past?"),
        ("Each allergy entry names the substance, the reaction and its severity.",
         "The substance, the reaction and its severity.",
         "What does each allergy entry name?",
         "What details must be written when someone reacted badly to something?"),
        ("Patients with an allergy wear a red wristband.",
         "A red wristband.",
         "Which wristband do patients with an allergy wear?",
         "What colour of band on the arm shows someone reacts badly to a drug?"),
        ("Only a prescriber or pharmacist may remove an allergy from the record, with the "
         "reason documented.",
         "Only a prescriber or pharmacist, with the reason documented.",
         "Who may remove an allergy from the record?",
         "Which staff can delete a previously noted bad reaction?"),
        ("A new drug reaction is reported to the national pharmacovigilance scheme within "
         "5 working days.",
         "Within 5 working days.",
         "Within how many working days is a new drug reaction reported to the national "
         "pharmacovigilance scheme?",
         "How fast must a fresh side effect be sent to the country's medicine safety system?"),
    ]),
    _sop("record-retention", "SOP-DOC-020", "Retention of clinical records",
         "record retention", [
             ("Adult clinical records are retained for 8 years after the last treatment.",
              "8 years after the last treatment.",
              "For how many years are adult clinical records retained?",
              "How long must hospital notes for grown-ups be stored after they were last seen?"),
             ("Records of children are retained until the patient's 25th birthday.",
              "Until the 25th birthday.",
              "Until when are records of children retained?",
              "When may the notes of a paediatric case be destroyed?"),
             ("Clinical trial records are retained for 25 years after the trial ends.",
              "25 years after the trial ends.",
              "How long are clinical trial records retained?",
              "For how long must the files of a research study be stored once it finishes?"),
             ("Records are destroyed by confidential shredding or incineration, with a "
              "destruction certificate.",
              "Confidential shredding or incineration, with a destruction certificate.",
              "How are records destroyed at the end of retention?",
              "What is the approved way to get rid of old hospital notes?"),
             ("Records under legal hold are not destroyed until the legal team releases the "
              "hold.",
              "Not until the legal team releases the hold.",
              "When are records under legal hold destroyed?",
              "Can notes involved in a lawsuit be thrown away at the usual time?"),
         ]),
    _sop("falls-assessment", "SOP-CL-027", "Falls risk assessment", "falls risk", [
        ("A falls risk assessment is completed within 6 hours of admission for every patient "
         "aged 65 or over.",
         "Within 6 hours of admission, for patients aged 65 or over.",
         "Within how many hours of admission is a falls risk assessment completed?",
         "How soon after arriving must older people be checked for the chance of tumbling?"),
        ("The falls risk assessment is repeated after any fall and at least every 7 days.",
         "After any fall and at least every 7 days.",
         "How often is the falls risk assessment repeated?",
         "How frequently must the tumble-danger check be done again?"),
        ("After a fall, the patient is not moved until a nurse has checked for injury and a "
         "doctor reviews them within 1 hour.",
         "Not moved until a nurse checks for injury; a doctor reviews within 1 hour.",
         "What happens immediately after a fall?",
         "If someone is found on the floor, can they be lifted straight away?"),
        ("A fall with head injury in a patient on anticoagulants leads to a CT scan of the head "
         "within 8 hours.",
         "A CT scan of the head within 8 hours.",
         "What scan follows a fall with head injury in a patient on anticoagulants?",
         "A person on blood thinners knocked their skull when tumbling: what imaging is "
         "needed and how fast?"),
        ("Every fall is recorded in the incident system before the end of the shift.",
         "In the incident system before the end of the shift.",
         "When is every fall recorded in the incident system?",
         "By when must a tumble on the ward be logged as a safety event?"),
    ]),
    _sop("pain-reassessment", "SOP-CL-031", "Pain assessment and reassessment",
         "pain reassessment", [
             ("Pain is scored on a 0 to 10 numeric rating scale at every set of observations.",
              "A 0 to 10 numeric rating scale, at every set of observations.",
              "On which scale is pain scored?",
              "How is the severity of hurting measured at each round of vital signs?"),
             ("Pain is reassessed 30 minutes after an intravenous analgesic and 60 minutes after "
              "an oral one.",
              "30 minutes after intravenous and 60 minutes after oral analgesia.",
              "When is pain reassessed after an intravenous or oral analgesic?",
              "How long after a painkiller by drip or by mouth do you check whether it worked?"),
             ("A pain score of 7 or more is escalated to the pain team or the doctor on duty.",
              "A score of 7 or more is escalated.",
              "Which pain score is escalated to the pain team?",
              "At what level of hurting must a specialist be called?"),
             ("Patients with cognitive impairment are assessed with a behavioural pain tool "
              "instead of the numeric scale.",
              "A behavioural pain tool.",
              "Which tool is used for patients with cognitive impairment?",
              "How do you measure hurting in someone with dementia who cannot give a number?"),
             ("Sedation is scored together with pain for every patient receiving opioids.",
              "Sedation is scored together with pain.",
              "What is scored together with pain for patients receiving opioids?",
              "What else must be checked alongside hurting in someone given morphine?"),
         ]),
)


@dataclass(frozen=True)
class DocPlan:
    """A document before rendering: fixed facts, each with its allowed wordings."""

    doc_id: str
    title: str
    kind: str
    openings: tuple[str, ...]
    facts: tuple[tuple[str, tuple[str, ...]], ...]  # (fact key, allowed wordings)
    closings: tuple[str, ...] = ("",)
    shuffle: bool = False


# --------------------------------------------------------------------------- rendering


def build_rag_corpus(seed: int = 0, *, guidelines_path: Path | str | None = None,
                     deviations_path: Path | str | None = None) -> list[Document]:
    """Every document of the corpus (SOPs, AMR guideline and drug docs, batch-record SOPs), in a
    fixed order; the seed only changes the wording, never a fact."""
    return [render_document(plan, seed) for plan in document_plans(guidelines_path,
                                                                     deviations_path)]


def render_document(plan: DocPlan, seed: int) -> Document:
    """The plan's opening, facts (one allowed wording each) and closing as prose."""
    rng = random.Random(_derive_seed(seed, plan.doc_id))
    facts = list(plan.facts)
    if plan.shuffle:
        rng.shuffle(facts)
    sentences = [rng.choice(plan.openings)]
    sentences += [rng.choice(wordings) for _, wordings in facts]
    sentences.append(rng.choice(plan.closings))
    return Document(plan.doc_id, plan.title, " ".join(s for s in sentences if s))


@lru_cache(maxsize=8)
def _plans(guidelines_path: str | None, deviations_path: str | None) -> tuple[DocPlan, ...]:
    guidelines = load_guidelines(guidelines_path)
    catalog = load_catalog(Path(deviations_path) if deviations_path else None)
    plans = [*(_sop_plan(spec) for spec in SOPS), *_amr_plans(guidelines),
             *_brsop_plans(catalog)]
    ids = [plan.doc_id for plan in plans]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"RAG corpus: document ids {duplicates} appear twice")
    return tuple(plans)


def document_plans(guidelines_path: Path | str | None = None,
                   deviations_path: Path | str | None = None) -> tuple[DocPlan, ...]:
    """The plans of every document (facts and their allowed wordings), read from the configs."""
    return _plans(str(guidelines_path) if guidelines_path else None,
                  str(deviations_path) if deviations_path else None)


def fact_variants(doc_id: str, *, guidelines_path: Path | str | None = None,
                  deviations_path: Path | str | None = None) -> dict[str, tuple[str, ...]]:
    """fact key -> allowed wordings, for one document id (ValueError for an unknown id)."""
    for plan in document_plans(guidelines_path, deviations_path):
        if plan.doc_id == doc_id:
            return dict(plan.facts)
    raise ValueError(f"RAG corpus: no document {doc_id!r}")


def evidence_sentence(document: Document, key: str, variants: tuple[str, ...]) -> str:
    """The wording of fact `key` that `document` actually contains (verbatim)."""
    for wording in variants:
        if wording in document.text:
            return wording
    raise ValueError(f"document {document.doc_id!r}: fact {key!r} is not in its text")


def _with_lead(lead: str, sentence: str) -> str:
    if not lead:
        return sentence
    first, _, rest = sentence.partition(" ")
    if len(first) > 1 and first[1:].islower() or first == "A":
        first = first.lower()
    return f"{lead}{first} {rest}"


def _sop_plan(spec: SopSpec) -> DocPlan:
    openings = (f"{spec.code} sets out the hospital procedure for {spec.topic}.",
                f"This procedure ({spec.code}) applies to {spec.topic} on every ward.",
                f"{spec.code} describes how staff handle {spec.topic}.")
    closings = ("Departures from this procedure are reported as incidents.",
                f"Questions about {spec.code} go to the document owner.",
                "")
    return DocPlan(spec.doc_id, f"{spec.code} {spec.title}", "sop", openings,
                   tuple((fact.key, tuple(_with_lead(lead, fact.sentence) for lead in LEAD_INS))
                         for fact in spec.facts), closings, shuffle=True)


# --------------------------------------------------------------------------- AMR documents


def _num(value: float) -> str:
    return f"{value:g}"


def _schedule(regimen: Regimen) -> str:
    return (f"{regimen.drug} {_num(regimen.dose_mg)} mg {regimen.route} every "
            f"{regimen.interval_h} h for {regimen.duration_days} days")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def regimen_key(listing: str, drug: str) -> str:
    """The fact key of one regimen sentence of a syndrome document."""
    return f"{listing}.{drug}"


def _amr_plans(g: Guidelines) -> list[DocPlan]:
    plans = [_syndrome_plan(s, g) for s in g.syndromes.values()]
    plans += [_drug_plan(d, g) for d in g.drugs.values()]
    return plans


def _syndrome_plan(s: Syndrome, g: Guidelines) -> DocPlan:
    facts: list[tuple[str, tuple[str, ...]]] = []
    if s.no_antibiotic:
        facts.append(("no_antibiotic", (
            f"No antibiotic is indicated for {s.name}; an antibiotic prescription for it is "
            "rejected.",
            f"Antibiotics are not indicated for {s.name}, so every antibiotic prescription for "
            "it is rejected.")))
    several = len(s.first_choice) > 1
    for regimen in s.first_choice:
        aware = g.drugs[regimen.drug].aware
        lead = "A first-choice regimen" if several else "The first-choice regimen"
        facts.append((regimen_key("first_choice", regimen.drug), (
            f"{lead} for {s.name} is {_schedule(regimen)} ({aware} group of AWaRe).",
            f"{lead} for {s.name} is {_schedule(regimen)}, {_article(aware)} {aware} "
            "antibiotic.")))
    for regimen in s.alternatives:
        aware = g.drugs[regimen.drug].aware
        facts.append((regimen_key("alternative", regimen.drug), (
            f"An acceptable alternative for {s.name} is {_schedule(regimen)} ({aware} group of "
            "AWaRe).",
            f"An acceptable alternative for {s.name} is {_schedule(regimen)}, "
            f"{_article(aware)} {aware} antibiotic.")))
    for drug, reason in s.not_indicated.items():
        facts.append((regimen_key("not_indicated", drug), (
            f"{drug.capitalize()} is not indicated for {s.name}: {reason}.",
            f"Do not use {drug} for {s.name} ({reason}).")))
    openings = (f"This guideline covers the empirical antibiotic treatment of {s.name} in "
                "adults.",
                f"Empirical adult treatment of {s.name} follows this guideline.")
    closings = ("A Watch alternative is accepted only when no Access first choice fits the "
                "patient.",
                "By AWaRe stewardship, an Access first choice is preferred to a Watch "
                "alternative whenever it fits the patient.")
    if s.no_antibiotic:
        closings = ("Symptomatic care is advised instead of antibiotics.",
                    "Supportive care replaces antibiotics here.")
    return DocPlan(f"amr-{s.id.replace('_', '-')}", f"AMR guideline: {s.name}", "amr", openings,
                   tuple(facts), closings)


def _drug_plan(d: Drug, g: Guidelines) -> DocPlan:
    name = d.name.capitalize()
    facts: list[tuple[str, tuple[str, ...]]] = [("aware", (
        f"{name} belongs to the {d.aware} group of the WHO AWaRe classification.",
        f"In the WHO AWaRe classification {d.name} is {_article(d.aware)} {d.aware} "
        "antibiotic."))]
    if d.allergy_classes:
        classes = ", ".join(d.allergy_classes)
        facts.append(("allergy", (
            f"A patient allergy to any of these classes contraindicates {d.name}: {classes}.",
            f"{name} is contraindicated by an allergy to any of these classes: {classes}.")))
    rule = d.renal
    if rule is None:
        facts.append(("renal", (f"{name} needs no renal dose adjustment.",
                                f"No renal dose adjustment is needed for {d.name}.")))
    elif rule.action == "avoid":
        threshold = _num(rule.egfr_below)
        facts.append(("renal", (
            f"Avoid {d.name} when the eGFR is below {threshold} mL/min.",
            f"{name} is contraindicated when the eGFR is below {threshold} mL/min.")))
    else:
        threshold = _num(rule.egfr_below)
        parts = []
        if rule.dose_factor is not None:
            parts.append(f"the dose multiplied by {_num(rule.dose_factor)}")
        if rule.interval_h is not None:
            parts.append(f"a dosing interval of {rule.interval_h} h")
        change = " and ".join(parts)
        facts.append(("renal", (
            f"When the eGFR is below {threshold} mL/min, {d.name} is given with {change}.",
            f"Below an eGFR of {threshold} mL/min, {d.name} needs {change}.")))
    facts.append(("pregnancy", (
        (f"{name} is avoided in pregnancy.", f"{name} is contraindicated in pregnancy.")
        if d.avoid_in_pregnancy else
        (f"{name} may be used in pregnancy.", f"Pregnancy is no contraindication to {d.name}."))))
    facts.append(("min_age", (
        (f"{name} is contraindicated below the age of {d.min_age_years} years.",
         f"{name} is not given to patients younger than {d.min_age_years} years.")
        if d.min_age_years is not None else
        (f"{name} has no minimum age.", f"There is no minimum age for {d.name}."))))
    if d.interaction_notes:
        notes = "; ".join(d.interaction_notes)
        facts.append(("interactions", (f"Interactions to check with {d.name}: {notes}.",
                                       f"Check these interactions of {d.name}: {notes}.")))
    listed = _listings(d.name, g)
    if listed:
        facts.append(("listed", (f"{name} is listed for {listed}.",
                                 f"The guideline lists {d.name} for {listed}.")))
    openings = (f"Drug profile of {d.name} for the AMR guideline.",
                f"This profile summarises the guideline facts about {d.name}.")
    return DocPlan(f"amr-drug-{_slug(d.name)}", f"AMR drug profile: {d.name}", "amr", openings,
                   tuple(facts))


def _listings(drug: str, g: Guidelines) -> str:
    parts = []
    for s in g.syndromes.values():
        found = s.listed(drug)
        if found:
            listing = "first choice" if found[0] == "first_choice" else "alternative"
            parts.append(f"{s.name} ({listing})")
    return ", ".join(parts)


def _slug(text: str) -> str:
    return "-".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def syndrome_doc_id(syndrome_id: str) -> str:
    """amr-<syndrome> document id of a syndrome key of the guideline table."""
    return f"amr-{syndrome_id.replace('_', '-')}"


def drug_doc_id(drug: str) -> str:
    """amr-drug-<drug> document id of a drug of the guideline table."""
    return f"amr-drug-{_slug(drug)}"


# --------------------------------------------------------------------------- batch-record SOPs

# How to correct a deviation, by the record field family the deviation type touches (the first
# of its `fields` in configs/deviations.yaml that has a family here).
CORRECTIONS: dict[str, tuple[str, ...]] = {
    "time": ("The performer who made the entry amends the time in the audited system, keeping the "
             "original value visible, and states the reason.",
             "QA reviews every time amendment before the batch is released."),
    "material": ("The material charge is reconstructed from the dispensing record and the "
                 "weighing printout, and the correction is verified by a second person.",
                 "If the quantity or lot cannot be reconstructed, a deviation report is raised "
                 "and QA assesses the impact on the batch."),
    "people": ("The step is attributed to the real performer and verifier from the training "
               "roster, and each signs the correction with the reason.",
               "An entry by a person without the role or training is reviewed by QA, and the "
               "step may need to be repeated under supervision."),
    "notes": ("The performer replaces the incomplete or informal text with a factual "
              "observation, dated and signed, and the original text stays in the audit trail.",
              "A change without a comment is explained in a late comment that names the person "
              "and the reason."),
    "process": ("The production supervisor compares the executed step with the master recipe and "
                "the parameter limits and opens a deviation report.",
                "QA decides on the impact assessment, further testing or rejection of the batch "
                "before release."),
    "record": ("Data management corrects the record through the validated system, never by "
               "editing the database directly, and the change is kept in the audit trail.",
               "The master data (status codes, equipment registry, schema) are checked and the "
               "entry is corrected against them."),
}
FIELD_FAMILIES: dict[str, str] = {
    "start_ts": "time", "end_ts": "time", "recorded_ts": "time",
    "qty_actual": "material", "uom": "material", "material_id": "material",
    "material_lot": "material",
    "operator_id": "people", "verifier_id": "people",
    "comments": "notes", "audit_trail": "notes",
    "phase": "process", "parameters.temperature_c": "process",
    "parameters.duration_min": "process", "environment": "process",
}


def correction_family(deviation: DeviationType) -> str:
    """The correction family of a deviation type (by its first mapped field, else 'record')."""
    for field in deviation.fields:
        if field in FIELD_FAMILIES:
            return FIELD_FAMILIES[field]
    return "record"


def brsop_doc_id(slug: str) -> str:
    """brsop-<slug> document id of a deviation type."""
    return f"brsop-{slug.replace('_', '-')}"


def _brsop_plans(catalog: DeviationCatalog) -> list[DocPlan]:
    plans = [_deviation_plan(t, catalog) for t in catalog.types]
    rules = catalog.site_rules
    site: list[tuple[str, tuple[str, ...]]] = []
    if "timestamp_format" in rules:
        site.append(("timestamp_format", (
            f"Every batch-record timestamp follows the site format: {rules['timestamp_format']}.",
            f"The site timestamp format is {rules['timestamp_format']}.")))
    if "late_entry_minutes" in rules:
        site.append(("late_entry_minutes", (
            f"A batch-record entry made more than {rules['late_entry_minutes']} minutes after "
            "the step is a late entry.",
            f"An entry recorded over {rules['late_entry_minutes']} minutes after the step counts "
            "as a late entry.")))
    if "operator_id_pattern" in rules:
        site.append(("operator_id_pattern", (
            f"Operator ids match the pattern {rules['operator_id_pattern']}.",
            f"An operator id must match {rules['operator_id_pattern']}.")))
    plans.append(DocPlan("brsop-site-rules", "Batch-record SOP: site rules", "brsop",
                         ("These site rules apply to every executed batch record.",
                          "Every executed batch record follows the site rules below."),
                         tuple(site)))
    principles: dict[str, list[str]] = {}
    for t in catalog.types:
        for principle in t.alcoa_principles:
            principles.setdefault(principle, []).append(t.slug)
    plans.append(DocPlan(
        "brsop-alcoa-principles", "Batch-record SOP: ALCOA+ principles and deviation types",
        "brsop",
        ("This index maps each ALCOA+ data-integrity principle to the deviation types that "
         "violate it.",
         "Each ALCOA+ principle below is followed by the deviation types that break it."),
        tuple((f"principle.{p}", (f"The {p} principle is violated by {', '.join(slugs)}.",
                                  f"Deviation types violating {p}: {', '.join(slugs)}."))
              for p, slugs in sorted(principles.items()))))
    return plans


def _deviation_plan(t: DeviationType, catalog: DeviationCatalog) -> DocPlan:
    rule = t.rule.rstrip(".")
    principles = " and ".join(t.alcoa_principles)
    fields = ", ".join(t.fields)
    context = []
    if t.needs_batch_context:
        context.append("other records of the same batch")
    if t.needs_master_data:
        context.append("the site master data")
    first_fix, second_fix = CORRECTIONS[correction_family(t)]
    facts: list[tuple[str, tuple[str, ...]]] = [
        ("rule", (f"The reference auditor flags {t.slug} when {rule}.",
                  f"A record is flagged as {t.slug} when {rule}.")),
        ("principles", (f"{t.name} violates the ALCOA+ principles {principles}.",
                        f"The ALCOA+ principles at stake in {t.slug} are {principles}.")),
        ("why", (f"Why it matters: {t.why}", f"Reason: {t.why}")),
        ("fields", (f"The record fields concerned are {fields}.",
                    f"It concerns the record fields {fields}.")),
        ("context", ((f"Finding it needs {' and '.join(context)}.",
                      f"Detecting it requires {' and '.join(context)}.") if context else
                     ("It is found from the record alone.",
                      "The single record is enough to detect it."))),
        ("correction", (f"To correct {t.slug}: {first_fix[0].lower()}{first_fix[1:]}",
                        f"Correction of {t.slug}: {first_fix[0].lower()}{first_fix[1:]}")),
        ("release", (second_fix,)),
    ]
    openings = (f"This batch-record SOP covers the deviation type {t.slug} ({t.name}, number "
                f"{t.id} of the catalog).",
                f"Batch-record deviation {t.id} of the catalog, {t.slug}: {t.name}.")
    return DocPlan(brsop_doc_id(t.slug), f"Batch-record SOP: {t.name}", "brsop", openings,
                   tuple(facts))


def _derive_seed(seed: int, label: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{label}".encode()).digest()[:8], "big")
