# ruff: noqa: E501
# (the recipe table below is data; one step per line reads best)
"""Site master data for the synthetic GxP batch records: roster, equipment registry, material master
and ISA-88 master recipes (unit procedure > operation > phase).

`build_site_master(site_cfg, seed)` returns a plain JSON-serialisable dict (deterministic for a seed).
`MasterIndex` turns that dict into the look-ups that the generator and the reference auditor share.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cached_property

STATUS_CODES: tuple[str, ...] = ("COMPLETED", "VERIFIED", "COMPLETED_WITH_COMMENT")

# key -> (name, uom). Keys are internal; IDs (MAT-1xxxx) are drawn from the seed.
_MATERIALS: tuple[tuple[str, str, str], ...] = (
    ("AMOX", "Amoxicillin trihydrate", "kg"),
    ("MET", "Metformin hydrochloride", "kg"),
    ("PCM", "Paracetamol", "kg"),
    ("IBU", "Ibuprofen", "kg"),
    ("PAN", "Pantoprazole sodium sesquihydrate", "kg"),
    ("ATV", "Atorvastatin calcium trihydrate", "kg"),
    ("MCC", "Microcrystalline cellulose PH102", "kg"),
    ("PVP", "Povidone K30", "kg"),
    ("CCS", "Croscarmellose sodium", "kg"),
    ("MGST", "Magnesium stearate", "kg"),
    ("CSD", "Colloidal silicon dioxide", "kg"),
    ("STARCH", "Maize starch", "kg"),
    ("PGS", "Pregelatinised maize starch", "kg"),
    ("STEARIC", "Stearic acid", "kg"),
    ("LACTOSE", "Lactose monohydrate", "kg"),
    ("CACO3", "Calcium carbonate", "kg"),
    ("OPADRY", "Opadry II white film-coating system", "kg"),
    ("TALC", "Talc", "kg"),
    ("HPMC", "Hypromellose 2910", "kg"),
    ("SLS", "Sodium lauryl sulfate", "g"),
    ("EDTA", "Disodium edetate dihydrate", "g"),
    ("IRONOX", "Iron oxide yellow E172", "g"),
    ("WATER", "Purified water", "L"),
    ("WFI", "Water for injections", "L"),
    ("ETOH", "Ethanol 96%", "L"),
    ("TWEEN", "Polysorbate 80", "mL"),
    ("SIMETICONE", "Simeticone emulsion 30%", "mL"),
    ("NAOH", "Sodium hydroxide solution 1 M", "mL"),
    ("CAPS", "Hard gelatin capsules size 0", "ea"),
    ("FOIL", "PVC/PVDC blister film roll", "ea"),
    ("CARTON", "Folding cartons", "ea"),
    ("LEAFLET", "Patient information leaflets", "ea"),
    ("BOTTLE", "HDPE bottles 100 mL", "ea"),
    ("CAP", "Child-resistant closures 38 mm", "ea"),
    ("VIAL", "Type I glass vials 10 mL", "ea"),
    ("STOPPER", "Bromobutyl lyophilisation stoppers 20 mm", "ea"),
    ("SEAL", "Aluminium flip-off seals 20 mm", "ea"),
)

# equipment class -> (id code, description, default temperature (low, high, target),
#                     default duration in minutes (low, high, target))
_EQUIPMENT_CLASSES: dict[str, tuple[str, str, tuple, tuple]] = {
    "balance": ("BAL", "Calibrated floor balance", (18.0, 25.0, 21.0), (10, 40, 20)),
    "sieve": ("SIE", "Vibratory sieve", (18.0, 25.0, 21.0), (15, 45, 25)),
    "mill": ("MIL", "Conical screen mill", (18.0, 25.0, 21.0), (20, 60, 35)),
    "blender": ("BLD", "Bin blender", (18.0, 25.0, 21.0), (5, 20, 10)),
    "granulator": ("GRN", "High-shear granulator", (18.0, 30.0, 22.0), (3, 10, 5)),
    "fluid_bed_dryer": ("FBD", "Fluid-bed dryer", (55.0, 65.0, 60.0), (60, 150, 90)),
    "moisture_analyzer": ("MOI", "Halogen moisture analyser", (100.0, 110.0, 105.0), (10, 20, 15)),
    "tablet_press": ("TAB", "Rotary tablet press", (18.0, 25.0, 21.0), (240, 600, 420)),
    "coater": ("COT", "Perforated pan coater", (38.0, 46.0, 42.0), (120, 240, 180)),
    "mixing_vessel": ("MIX", "Coating suspension vessel", (18.0, 30.0, 22.0), (30, 60, 45)),
    "encapsulator": ("ENC", "Automatic capsule filler", (18.0, 25.0, 21.0), (240, 480, 360)),
    "metal_detector": ("MTD", "Tablet metal detector", (18.0, 25.0, 21.0), (60, 240, 120)),
    "blister_line": ("BLS", "Blister packaging line", (15.0, 25.0, 21.0), (180, 420, 300)),
    "cartoner": ("CRT", "Cartoner", (15.0, 25.0, 21.0), (120, 360, 240)),
    "bottle_line": ("BTL", "Bottle filling and capping line", (15.0, 25.0, 21.0), (180, 420, 300)),
    "vial_washer": ("VWS", "Vial washing machine", (60.0, 80.0, 70.0), (60, 120, 90)),
    "depyrogenation_tunnel": ("DPT", "Depyrogenation tunnel", (300.0, 330.0, 320.0), (45, 90, 60)),
    "autoclave": ("AUT", "Steam autoclave", (121.0, 124.0, 122.0), (20, 40, 30)),
    "compounding_vessel": ("CMP", "Stainless-steel compounding vessel", (15.0, 25.0, 20.0), (15, 45, 25)),
    "filter_integrity_tester": ("FIT", "Filter integrity tester", (18.0, 25.0, 21.0), (15, 30, 20)),
    "filtration_skid": ("FLT", "Sterile filtration skid", (15.0, 25.0, 20.0), (30, 90, 60)),
    "filling_machine": ("FIL", "Aseptic vial filling machine", (18.0, 22.0, 20.0), (240, 480, 360)),
    "lyophilizer": ("LYO", "Freeze dryer", (-45.0, -35.0, -40.0), (120, 240, 180)),
    "capping_machine": ("CPM", "Vial capping machine", (18.0, 25.0, 21.0), (120, 300, 180)),
    "inspection_machine": ("INS", "Visual inspection machine", (18.0, 25.0, 21.0), (180, 480, 300)),
}

_NO_T = None  # use the equipment class default
_SHORT = (5, 20, 10)  # charging / loading phases

# (product code, name, recipe version, steps); a step is
# (unit procedure, operation, phase, material key or None, equipment class, temperature override,
#  duration override)
_RECIPES: tuple[tuple[str, str, str, tuple], ...] = (
    ("PRD-AMX500", "Amoxicillin 500 mg hard capsules", "3.1", (
        ("UP10 Dispensing", "OP10 Weigh API", "PH10 Weigh amoxicillin trihydrate", "AMOX", "balance", _NO_T, (15, 40, 25)),
        ("UP10 Dispensing", "OP10 Weigh API", "PH20 Verify API net weight", None, "balance", _NO_T, (5, 15, 10)),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH10 Weigh magnesium stearate", "MGST", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH20 Weigh colloidal silicon dioxide", "CSD", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH30 Weigh maize starch", "STARCH", "balance", _NO_T, None),
        ("UP20 Blending", "OP10 Sieving", "PH10 Sieve API through 1.0 mm screen", None, "sieve", _NO_T, None),
        ("UP20 Blending", "OP10 Sieving", "PH20 Sieve excipients through 0.8 mm screen", None, "sieve", _NO_T, None),
        ("UP20 Blending", "OP20 Pre-blend", "PH10 Charge amoxicillin to bin", "AMOX", "blender", _NO_T, _SHORT),
        ("UP20 Blending", "OP20 Pre-blend", "PH20 Charge maize starch to bin", "STARCH", "blender", _NO_T, _SHORT),
        ("UP20 Blending", "OP20 Pre-blend", "PH30 Blend 15 min at 12 rpm", None, "blender", _NO_T, (12, 18, 15)),
        ("UP20 Blending", "OP30 Lubrication", "PH10 Charge magnesium stearate", "MGST", "blender", _NO_T, _SHORT),
        ("UP20 Blending", "OP30 Lubrication", "PH20 Lubricate 3 min at 12 rpm", None, "blender", _NO_T, (2, 5, 3)),
        ("UP30 Encapsulation", "OP10 Machine set-up", "PH10 Load hard gelatin capsule shells", "CAPS", "encapsulator", _NO_T, (20, 60, 30)),
        ("UP30 Encapsulation", "OP10 Machine set-up", "PH20 Adjust and verify fill weight", None, "encapsulator", _NO_T, (20, 60, 40)),
        ("UP30 Encapsulation", "OP20 Filling", "PH10 Encapsulate blend", None, "encapsulator", _NO_T, None),
        ("UP30 Encapsulation", "OP20 Filling", "PH20 In-process capsule weight checks", None, "balance", _NO_T, (15, 45, 30)),
        ("UP40 Packaging", "OP10 Blistering", "PH10 Load blister film", "FOIL", "blister_line", _NO_T, (10, 30, 15)),
        ("UP40 Packaging", "OP10 Blistering", "PH20 Blister capsules", None, "blister_line", _NO_T, None),
        ("UP40 Packaging", "OP20 Cartoning", "PH10 Load folding cartons", "CARTON", "cartoner", _NO_T, (10, 30, 15)),
        ("UP40 Packaging", "OP20 Cartoning", "PH20 Insert leaflets and close cartons", "LEAFLET", "cartoner", _NO_T, None),
    )),
    ("PRD-MET850", "Metformin hydrochloride 850 mg film-coated tablets", "5.0", (
        ("UP10 Dispensing", "OP10 Weigh API", "PH10 Weigh metformin hydrochloride", "MET", "balance", _NO_T, (15, 40, 25)),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH10 Weigh povidone K30", "PVP", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH20 Weigh magnesium stearate", "MGST", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP30 Binder preparation", "PH10 Dispense purified water", "WATER", "mixing_vessel", _NO_T, (10, 20, 15)),
        ("UP10 Dispensing", "OP30 Binder preparation", "PH20 Dissolve povidone in purified water", "PVP", "mixing_vessel", _NO_T, None),
        ("UP20 Granulation", "OP10 Dry mix", "PH10 Charge metformin to granulator", "MET", "granulator", _NO_T, _SHORT),
        ("UP20 Granulation", "OP10 Dry mix", "PH20 Dry mix 5 min", None, "granulator", _NO_T, (4, 8, 5)),
        ("UP20 Granulation", "OP20 Wet massing", "PH10 Add binder solution", None, "granulator", _NO_T, (4, 8, 6)),
        ("UP20 Granulation", "OP20 Wet massing", "PH20 Wet mass to end-point", None, "granulator", _NO_T, (2, 6, 3)),
        ("UP20 Granulation", "OP30 Wet milling", "PH10 Wet mill granules", None, "mill", _NO_T, None),
        ("UP30 Drying", "OP10 Fluid-bed drying", "PH10 Dry granules at 60 C inlet", None, "fluid_bed_dryer", _NO_T, None),
        ("UP30 Drying", "OP10 Fluid-bed drying", "PH20 Check loss on drying", None, "moisture_analyzer", _NO_T, None),
        ("UP30 Drying", "OP20 Dry milling", "PH10 Mill dried granules through 1.0 mm screen", None, "mill", _NO_T, None),
        ("UP40 Blending", "OP10 Final blend", "PH10 Charge granules to bin blender", None, "blender", _NO_T, _SHORT),
        ("UP40 Blending", "OP10 Final blend", "PH20 Charge croscarmellose sodium", "CCS", "blender", _NO_T, _SHORT),
        ("UP40 Blending", "OP20 Lubrication", "PH10 Charge magnesium stearate", "MGST", "blender", _NO_T, _SHORT),
        ("UP40 Blending", "OP20 Lubrication", "PH20 Lubricate 3 min at 10 rpm", None, "blender", _NO_T, (2, 5, 3)),
        ("UP50 Compression", "OP10 Press set-up", "PH10 Set up press and verify tooling", None, "tablet_press", _NO_T, (30, 90, 60)),
        ("UP50 Compression", "OP20 Compression", "PH10 Compress tablet cores", None, "tablet_press", _NO_T, None),
        ("UP60 Coating", "OP10 Coating suspension", "PH10 Disperse Opadry II white in purified water", "OPADRY", "mixing_vessel", _NO_T, None),
        ("UP60 Coating", "OP20 Film coating", "PH10 Film-coat tablet cores", None, "coater", _NO_T, None),
        ("UP70 Packaging", "OP10 Bottling", "PH10 Load HDPE bottles", "BOTTLE", "bottle_line", _NO_T, (10, 30, 15)),
        ("UP70 Packaging", "OP10 Bottling", "PH20 Fill and close bottles", "CAP", "bottle_line", _NO_T, None),
        ("UP70 Packaging", "OP20 Cartoning", "PH10 Label bottles and pack in cartons", "CARTON", "cartoner", _NO_T, None),
    )),
    ("PRD-PCM500", "Paracetamol 500 mg tablets", "2.4", (
        ("UP10 Dispensing", "OP10 Weigh API", "PH10 Weigh paracetamol", "PCM", "balance", _NO_T, (15, 40, 25)),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH10 Weigh pregelatinised maize starch", "PGS", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH20 Weigh microcrystalline cellulose", "MCC", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH30 Weigh stearic acid", "STEARIC", "balance", _NO_T, None),
        ("UP20 Blending", "OP10 Sieving", "PH10 Sieve paracetamol through 1.0 mm screen", None, "sieve", _NO_T, None),
        ("UP20 Blending", "OP20 Pre-blend", "PH10 Charge paracetamol to bin", "PCM", "blender", _NO_T, _SHORT),
        ("UP20 Blending", "OP20 Pre-blend", "PH20 Charge microcrystalline cellulose to bin", "MCC", "blender", _NO_T, _SHORT),
        ("UP20 Blending", "OP20 Pre-blend", "PH30 Charge pregelatinised starch to bin", "PGS", "blender", _NO_T, _SHORT),
        ("UP20 Blending", "OP20 Pre-blend", "PH40 Blend 20 min at 12 rpm", None, "blender", _NO_T, (17, 23, 20)),
        ("UP20 Blending", "OP30 Lubrication", "PH10 Charge stearic acid", "STEARIC", "blender", _NO_T, _SHORT),
        ("UP20 Blending", "OP30 Lubrication", "PH20 Lubricate 4 min at 12 rpm", None, "blender", _NO_T, (3, 6, 4)),
        ("UP30 Compression", "OP10 Press set-up", "PH10 Set up press and verify tooling", None, "tablet_press", _NO_T, (30, 90, 60)),
        ("UP30 Compression", "OP20 Compression", "PH10 Compress tablets", None, "tablet_press", _NO_T, None),
        ("UP30 Compression", "OP20 Compression", "PH20 Pass tablets through metal detector", None, "metal_detector", _NO_T, None),
        ("UP40 Packaging", "OP10 Blistering", "PH10 Load blister film", "FOIL", "blister_line", _NO_T, (10, 30, 15)),
        ("UP40 Packaging", "OP10 Blistering", "PH20 Blister tablets", None, "blister_line", _NO_T, None),
        ("UP40 Packaging", "OP20 Cartoning", "PH10 Load folding cartons", "CARTON", "cartoner", _NO_T, (10, 30, 15)),
        ("UP40 Packaging", "OP20 Cartoning", "PH20 Insert leaflets and close cartons", "LEAFLET", "cartoner", _NO_T, None),
    )),
    ("PRD-IBU400", "Ibuprofen 400 mg film-coated tablets", "4.2", (
        ("UP10 Dispensing", "OP10 Weigh API", "PH10 Weigh ibuprofen", "IBU", "balance", _NO_T, (15, 40, 25)),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH10 Weigh maize starch", "STARCH", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH20 Weigh colloidal silicon dioxide", "CSD", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH30 Weigh sodium lauryl sulfate", "SLS", "balance", _NO_T, None),
        ("UP20 Granulation", "OP10 Dry mix", "PH10 Charge ibuprofen to granulator", "IBU", "granulator", _NO_T, _SHORT),
        ("UP20 Granulation", "OP10 Dry mix", "PH20 Charge sodium lauryl sulfate", "SLS", "granulator", _NO_T, _SHORT),
        ("UP20 Granulation", "OP10 Dry mix", "PH30 Dry mix 4 min", None, "granulator", _NO_T, (3, 6, 4)),
        ("UP20 Granulation", "OP20 Wet massing", "PH10 Add purified water", "WATER", "granulator", _NO_T, (4, 8, 6)),
        ("UP20 Granulation", "OP20 Wet massing", "PH20 Wet mass to end-point", None, "granulator", _NO_T, (2, 6, 3)),
        ("UP30 Drying", "OP10 Fluid-bed drying", "PH10 Dry granules at 60 C inlet", None, "fluid_bed_dryer", _NO_T, None),
        ("UP30 Drying", "OP10 Fluid-bed drying", "PH20 Check loss on drying", None, "moisture_analyzer", _NO_T, None),
        ("UP30 Drying", "OP20 Dry milling", "PH10 Mill dried granules through 1.0 mm screen", None, "mill", _NO_T, None),
        ("UP40 Blending", "OP10 Final blend", "PH10 Charge colloidal silicon dioxide", "CSD", "blender", _NO_T, _SHORT),
        ("UP40 Blending", "OP10 Final blend", "PH20 Charge croscarmellose sodium", "CCS", "blender", _NO_T, _SHORT),
        ("UP40 Blending", "OP20 Lubrication", "PH10 Charge magnesium stearate", "MGST", "blender", _NO_T, _SHORT),
        ("UP40 Blending", "OP20 Lubrication", "PH20 Lubricate 3 min at 10 rpm", None, "blender", _NO_T, (2, 5, 3)),
        ("UP50 Compression", "OP10 Compression", "PH10 Compress tablet cores", None, "tablet_press", _NO_T, None),
        ("UP60 Coating", "OP10 Coating suspension", "PH10 Disperse Opadry II white in purified water", "OPADRY", "mixing_vessel", _NO_T, None),
        ("UP60 Coating", "OP10 Coating suspension", "PH20 Add simeticone emulsion", "SIMETICONE", "mixing_vessel", _NO_T, (5, 15, 10)),
        ("UP60 Coating", "OP20 Film coating", "PH10 Film-coat tablet cores", None, "coater", _NO_T, None),
        ("UP70 Packaging", "OP10 Blistering", "PH10 Blister tablets", "FOIL", "blister_line", _NO_T, None),
        ("UP70 Packaging", "OP20 Cartoning", "PH10 Pack blisters in cartons", "CARTON", "cartoner", _NO_T, None),
    )),
    ("PRD-PAN40", "Pantoprazole 40 mg powder for solution for injection", "1.7", (
        ("UP10 Component preparation", "OP10 Vial preparation", "PH10 Wash glass vials", "VIAL", "vial_washer", _NO_T, None),
        ("UP10 Component preparation", "OP10 Vial preparation", "PH20 Depyrogenate vials", None, "depyrogenation_tunnel", _NO_T, None),
        ("UP10 Component preparation", "OP20 Stopper preparation", "PH10 Sterilise stoppers", "STOPPER", "autoclave", _NO_T, None),
        ("UP20 Dispensing", "OP10 Weigh API", "PH10 Weigh pantoprazole sodium sesquihydrate", "PAN", "balance", _NO_T, (15, 40, 25)),
        ("UP20 Dispensing", "OP20 Weigh excipients", "PH10 Weigh disodium edetate", "EDTA", "balance", _NO_T, None),
        ("UP20 Dispensing", "OP20 Weigh excipients", "PH20 Dispense sodium hydroxide solution", "NAOH", "balance", _NO_T, None),
        ("UP30 Compounding", "OP10 Solution preparation", "PH10 Charge water for injections", "WFI", "compounding_vessel", _NO_T, None),
        ("UP30 Compounding", "OP10 Solution preparation", "PH20 Dissolve disodium edetate", "EDTA", "compounding_vessel", _NO_T, None),
        ("UP30 Compounding", "OP10 Solution preparation", "PH30 Dissolve pantoprazole sodium", "PAN", "compounding_vessel", _NO_T, None),
        ("UP30 Compounding", "OP20 pH adjustment", "PH10 Adjust pH with sodium hydroxide", "NAOH", "compounding_vessel", _NO_T, (10, 30, 15)),
        ("UP30 Compounding", "OP20 pH adjustment", "PH20 Make up to volume with water for injections", "WFI", "compounding_vessel", _NO_T, (5, 20, 10)),
        ("UP40 Sterile filtration", "OP10 Filtration", "PH10 Pre-use filter integrity test", None, "filter_integrity_tester", _NO_T, None),
        ("UP40 Sterile filtration", "OP10 Filtration", "PH20 Filter solution through 0.22 um filter", None, "filtration_skid", _NO_T, None),
        ("UP40 Sterile filtration", "OP10 Filtration", "PH30 Post-use filter integrity test", None, "filter_integrity_tester", _NO_T, None),
        ("UP50 Aseptic filling", "OP10 Filling", "PH10 Fill vials and partially stopper", None, "filling_machine", _NO_T, None),
        ("UP50 Aseptic filling", "OP10 Filling", "PH20 In-process fill weight checks", None, "balance", _NO_T, (15, 45, 30)),
        ("UP60 Lyophilisation", "OP10 Freeze drying", "PH10 Freeze product on shelves", None, "lyophilizer", _NO_T, None),
        ("UP60 Lyophilisation", "OP10 Freeze drying", "PH20 Primary and secondary drying", None, "lyophilizer", (-25.0, -15.0, -20.0), (1200, 2400, 1800)),
        ("UP70 Capping and inspection", "OP10 Capping", "PH10 Crimp flip-off seals", "SEAL", "capping_machine", _NO_T, None),
        ("UP70 Capping and inspection", "OP20 Inspection", "PH10 Perform 100% visual inspection", None, "inspection_machine", _NO_T, None),
    )),
    ("PRD-ATV20", "Atorvastatin 20 mg film-coated tablets", "2.0", (
        ("UP10 Dispensing", "OP10 Weigh API", "PH10 Weigh atorvastatin calcium trihydrate", "ATV", "balance", _NO_T, (15, 40, 25)),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH10 Weigh calcium carbonate", "CACO3", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH20 Weigh lactose monohydrate", "LACTOSE", "balance", _NO_T, None),
        ("UP10 Dispensing", "OP20 Weigh excipients", "PH30 Dispense polysorbate 80", "TWEEN", "balance", _NO_T, None),
        ("UP20 Granulation", "OP10 Dry mix", "PH10 Charge atorvastatin to granulator", "ATV", "granulator", _NO_T, _SHORT),
        ("UP20 Granulation", "OP20 Wet massing", "PH10 Add polysorbate 80 binder solution", "TWEEN", "granulator", _NO_T, (4, 8, 6)),
        ("UP20 Granulation", "OP20 Wet massing", "PH20 Wet mass to end-point", None, "granulator", _NO_T, (2, 6, 3)),
        ("UP30 Drying", "OP10 Fluid-bed drying", "PH10 Dry granules at 60 C inlet", None, "fluid_bed_dryer", _NO_T, None),
        ("UP30 Drying", "OP20 Dry milling", "PH10 Mill dried granules through 0.8 mm screen", None, "mill", _NO_T, None),
        ("UP40 Blending", "OP10 Lubrication", "PH10 Charge magnesium stearate", "MGST", "blender", _NO_T, _SHORT),
        ("UP40 Blending", "OP10 Lubrication", "PH20 Lubricate 3 min at 10 rpm", None, "blender", _NO_T, (2, 5, 3)),
        ("UP50 Compression", "OP10 Compression", "PH10 Compress tablet cores", None, "tablet_press", _NO_T, None),
        ("UP60 Coating", "OP10 Coating suspension", "PH10 Disperse Opadry II white in purified water", "OPADRY", "mixing_vessel", _NO_T, None),
        ("UP60 Coating", "OP20 Film coating", "PH10 Film-coat tablet cores", None, "coater", _NO_T, None),
        ("UP70 Packaging", "OP10 Blistering", "PH10 Blister tablets", "FOIL", "blister_line", _NO_T, None),
        ("UP70 Packaging", "OP20 Cartoning", "PH10 Pack blisters in cartons", "CARTON", "cartoner", _NO_T, None),
    )),
)

_FIRST_NAMES = (
    "Anna", "Lukas", "Maria", "Jonas", "Sophie", "Felix", "Laura", "Paul", "Lea", "Elias", "Julia",
    "Noah", "Emma", "Leon", "Mia", "Ben", "Hannah", "Finn", "Lena", "Tim", "Sara", "David", "Nina",
    "Jan", "Clara", "Max", "Amelie", "Tobias", "Katharina", "Stefan", "Ayse", "Mehmet", "Olga",
    "Piotr", "Ines", "Marco", "Elena", "Tomasz", "Fatima", "Joao",
)
_LAST_NAMES = (
    "Mueller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
    "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Neumann", "Schwarz", "Braun", "Zimmermann",
    "Krueger", "Hartmann", "Lange", "Werner", "Krause", "Lehmann", "Koehler", "Yilmaz", "Kowalski",
    "Nowak", "Rossi", "Silva", "Jansen", "Petrov",
)

N_OPERATORS = 30
N_VERIFIERS = 10


def derive_seed(*parts: object) -> int:
    """A stable 64-bit seed from any parts (not Python's salted hash())."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _limits(low: float, high: float, target: float) -> dict:
    return {"low": low, "high": high, "target": target}


def build_site_master(site_cfg: dict, seed: int) -> dict:
    """Build the site master data (deterministic for a seed; JSON-serialisable).

    `site_cfg` is configs/datasets.yaml's `site_master` (site_id, timezone, extracted_at).
    """
    rng = random.Random(derive_seed(seed, "site_master"))

    # Roster: unique OP#### ids; the first N_OPERATORS are operators, the rest verifiers.
    ids = rng.sample(range(1000, 10000), N_OPERATORS + N_VERIFIERS)
    names: list[str] = []
    seen_names: set[str] = set()
    while len(names) < len(ids):
        name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
        if name not in seen_names:
            seen_names.add(name)
            names.append(name)
    operators = [
        {"operator_id": f"OP{num:04d}", "name": name,
         "role": "operator" if k < N_OPERATORS else "verifier"}
        for k, (num, name) in enumerate(zip(ids, names, strict=True))
    ]

    # Equipment registry: 2-4 qualified units per class.
    equipment = []
    for eq_class, (code, description, _t, _d) in _EQUIPMENT_CLASSES.items():
        for unit in range(1, rng.randint(2, 4) + 1):
            equipment.append({"equipment_id": f"EQ-{code}-{unit:03d}",
                              "description": f"{description} {unit}",
                              "equipment_class": eq_class})

    # Material master: MAT-1xxxx ids.
    mat_nums = rng.sample(range(10000, 20000), len(_MATERIALS))
    materials = []
    mat_id_by_key: dict[str, str] = {}
    for (key, name, uom), num in zip(_MATERIALS, mat_nums, strict=True):
        mat_id_by_key[key] = f"MAT-{num}"
        materials.append({"material_id": f"MAT-{num}", "name": name, "uom": uom})

    recipes = []
    for product_code, name, version, steps in _RECIPES:
        out_steps = []
        for up, op, ph, mat_key, eq_class, t_override, d_override in steps:
            _code, _desc, t_default, d_default = _EQUIPMENT_CLASSES[eq_class]
            t = t_override or t_default
            d = d_override or d_default
            out_steps.append({
                "unit_procedure": up,
                "operation": op,
                "phase": ph,
                "materials": [mat_id_by_key[mat_key]] if mat_key else [],
                "equipment_class": eq_class,
                "temperature_c": _limits(float(t[0]), float(t[1]), float(t[2])),
                "duration_min": _limits(int(d[0]), int(d[1]), int(d[2])),
            })
        recipes.append({"product_code": product_code, "name": name, "recipe_version": version,
                        "steps": out_steps})

    return {
        "site_id": site_cfg["site_id"],
        "timezone": site_cfg["timezone"],
        "extracted_at": site_cfg["extracted_at"],
        "status_codes": list(STATUS_CODES),
        "operators": operators,
        "equipment": equipment,
        "materials": materials,
        "recipes": recipes,
    }


def phase_key(unit_procedure: str, operation: str, phase: str) -> tuple[str, str, str]:
    return (unit_procedure, operation, phase)


@dataclass(frozen=True, eq=False)
class MasterIndex:
    """Look-ups over a site master dict, shared by the generator and the reference auditor."""

    master: dict

    @cached_property
    def status_codes(self) -> frozenset[str]:
        return frozenset(self.master["status_codes"])

    @cached_property
    def roster(self) -> frozenset[str]:
        return frozenset(o["operator_id"] for o in self.master["operators"])

    @cached_property
    def operator_ids(self) -> tuple[str, ...]:
        return tuple(o["operator_id"] for o in self.master["operators"] if o["role"] == "operator")

    @cached_property
    def verifier_ids(self) -> tuple[str, ...]:
        return tuple(o["operator_id"] for o in self.master["operators"] if o["role"] == "verifier")

    @cached_property
    def equipment_ids(self) -> frozenset[str]:
        return frozenset(e["equipment_id"] for e in self.master["equipment"])

    @cached_property
    def equipment_by_class(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for e in self.master["equipment"]:
            out.setdefault(e["equipment_class"], []).append(e["equipment_id"])
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def material_uom(self) -> dict[str, str]:
        return {m["material_id"]: m["uom"] for m in self.master["materials"]}

    @cached_property
    def material_ids(self) -> tuple[str, ...]:
        return tuple(m["material_id"] for m in self.master["materials"])

    @cached_property
    def recipes(self) -> dict[str, dict]:
        return {r["product_code"]: r for r in self.master["recipes"]}

    @cached_property
    def phase_rank(self) -> dict[tuple[str, str, str, str], int]:
        """(product_code, unit_procedure, operation, phase) -> position in the master recipe."""
        out = {}
        for r in self.master["recipes"]:
            for k, s in enumerate(r["steps"]):
                out[(r["product_code"], s["unit_procedure"], s["operation"], s["phase"])] = k
        return out

    @cached_property
    def phase_bom(self) -> dict[tuple[str, str, str, str], frozenset[str]]:
        """(product_code, unit_procedure, operation, phase) -> materials the phase may charge."""
        out = {}
        for r in self.master["recipes"]:
            for s in r["steps"]:
                out[(r["product_code"], s["unit_procedure"], s["operation"], s["phase"])] = (
                    frozenset(s["materials"]))
        return out
